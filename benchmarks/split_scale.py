"""`split` at 1M, 3M and 10M rows: the embedded (streaming) split beside the in-memory pandas split; prints JSON.

    python benchmarks/split_scale.py [--rows 1000000 3000000 10000000] [--baseline-rev ae0a09f] [--repeat 3] [--strategy auto]

`benchmarks/scale.py` compares each engine on its own `validate` output, so its baseline can only run where the
in-memory `validate` fits (1M rows). Here both splits read the same accepted rows: the embedded `validate`'s
shards for the embedded split, and the same rows concatenated into one Parquet file for the in-memory split (one
file is what the in-memory `validate` writes, and what sends `split` to its in-memory path). The baseline is the
in-memory split as the code was at `--baseline-rev`, in its own worktree. Each run is a fresh process
(`scale.run_stage`): seconds include the interpreter's start, peak RSS is the process's.

`--strategy` is `split.strategy`. The generated credit contract has a timestamp, so `auto` splits by whole days; the
generated rows are in date order, so every shard but the ones a cut falls in lies wholly in one split and is copied.
`stratified` draws each row by the hash of its id: every shard is read, cut up and written again (the in-memory
baseline then stratifies exactly, with scikit-learn).
"""
import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scale import ROOT, SCHEMA, SOURCE, run_repeated, run_stage, worktree  # noqa: E402


def one_file(shards: Path, path: Path):
    "The accepted shards as one Parquet file, batch by batch (memory: one batch)."
    import pyarrow.dataset as ds, pyarrow.parquet as pq
    path.parent.mkdir(parents=True, exist_ok=True)
    part, writer = path.with_name(path.name + ".part"), None  # renamed when whole: a killed run leaves no short file
    for batch in ds.dataset(shards).to_batches():
        writer = writer or pq.ParquetWriter(part, batch.schema)
        writer.write_batch(batch)
    if writer: writer.close(); part.rename(path)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 3_000_000, 10_000_000])
    ap.add_argument("--baseline-rev", default="ae0a09f", help="the in-memory split as the code was at this git revision")
    ap.add_argument("--repeat", type=int, default=3, help="runs per engine at 3M rows or fewer (median reported)")
    ap.add_argument("--strategy", default="auto", choices=["auto", "time", "stratified", "random"], help="split.strategy")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "flex-ml-scale")
    a = ap.parse_args()
    from flex_ml.generate import generate
    base = worktree(a.baseline_rev, a.work)
    runs = []
    for n in a.rows:
        data, emb, mem = a.work / f"credit-{n}", a.work / f"split-embedded-{n}", a.work / f"split-in-memory-{n}"
        if not (data / "manifest.json").exists() or json.loads((data / "manifest.json").read_text())["rows"] != n:
            generate(n, data, SCHEMA, SOURCE, seed=0, chunk_rows=1_000_000, log=lambda m: print(m, file=sys.stderr))
        if not (emb / "validate" / "summary.json").exists():
            run_stage("validate", "embedded", data / "data.csv", emb, n)
        if not (mem / "validate" / "accepted.parquet").exists():
            t0 = time.perf_counter()
            one_file(emb / "validate" / "accepted.parquet", mem / "validate" / "accepted.parquet")
            print(f"{n:,} accepted rows in one file in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        repeat = a.repeat if n <= 3_000_000 else 1
        run = dict(rows=n, embedded=run_repeated(repeat, "split", "embedded", data / "data.csv", emb, n, strategy=a.strategy),
                   in_memory=run_repeated(repeat, "split", "pandas", data / "data.csv", mem, n, base, strategy=a.strategy))
        run["speedup"] = round(run["embedded"]["rows_per_s"] / run["in_memory"]["rows_per_s"], 2)
        run["memory_ratio"] = round(run["in_memory"]["peak_rss_mb"] / run["embedded"]["peak_rss_mb"], 2)
        runs.append(run)
        print(json.dumps(run), file=sys.stderr, flush=True)
    print(json.dumps(dict(benchmark="split_scale", baseline=f"in-memory split at {a.baseline_rev}", strategy=a.strategy, runs=runs,
                          machine=dict(cpus=__import__("os").cpu_count())), indent=2))


if __name__ == "__main__":
    main()

"""Data stages at scale: seconds, rows/s and peak memory of validate, split and score per engine; prints one JSON object.

    python benchmarks/scale.py [--rows 1000000 10000000] [--spark-rows 1000000] [--pandas-rows 1000000] [--work /tmp/flex-ml-scale]
                               [--baseline-rev REV] [--model artifacts/model] [--repeat 3]

Makes each dataset with `flex-ml generate` (the real credit rows, jittered; seed 0), then runs every
stage in a child process of a fresh parent that reports the child's peak RSS
(`getrusage(RUSAGE_CHILDREN)`). Engines: `embedded` (streaming) at every size, Spark `local[2]`
(`--spark-rows`), and today's in-memory pandas path (`--pandas-rows`: it holds the whole table, about
2 GB per million rows, so 10M would not fit) as the same-run baseline. `--baseline-rev REV` runs that
in-memory path as the code was at git revision REV too (from a `git worktree`), so a change that speeds
up both paths is still measured against what it replaced. `growth` is
time(largest)/time(smallest) of the embedded engine per stage (rows grow by their ratio).
Progress goes to stderr; each run's JSON too, so a cut-short run still leaves its numbers.
`--repeat N` runs each stage N times at 1M rows or fewer (not on Spark, whose runs take minutes) and
reports the run with the median time, all times in `seconds_runs`: a 2-second stage varies by a
quarter between runs on a shared machine.

`score` is batch scoring of the raw file with an export (`--model`, default artifacts/model: run `make repro`
first): `embedded` is `flex-ml score` with its chunk workers (one per core), `pandas` the same code in one
process, `pandas@REV` the scoring as it was at REV, and `spark` `mapInPandas` with the NumPy runtime.
"""
import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "schemas" / "credit_default_generated.yaml"
SOURCE = ROOT / "data" / "credit-default" / "default_of_credit_card_clients.csv"

PEAK = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
        "print('PEAK', r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")

STAGE = r"""
import json, sys
from flex_ml.datastages import split_with, validate_with
from flex_ml.params import PARAMS_DEFAULTS  # not from flex_ml.engines: that module loads pandas, which a split on shards does not
ENGINE_DEFAULTS = PARAMS_DEFAULTS["engine"]
stage, engine, raw, out = sys.argv[1:5]
eng = {**ENGINE_DEFAULTS, "name": "spark" if engine == "spark" else "embedded",
       "in_memory_max_mb": 1e9 if engine == "pandas" else 0, "conf": {"spark.driver.memory": "4g"}}
log = lambda m: print(m, file=sys.stderr, flush=True)
if stage == "validate": s = validate_with(eng, raw, sys.argv[5], out + "/validate", 1.0, 1, log=log)
elif stage == "score" and engine == "spark":
    from flex_ml.spark_score import spark_score
    s = spark_score(sys.argv[6], raw, out + "/score", eng, log=log)
    s["rows_in"] = s["rows"]
elif stage == "score":
    from flex_ml.score import score_file
    s = score_file(sys.argv[6], raw, out + "/scores.parquet", progress=False, **({"workers": 0} if engine == "embedded" else {}))
    s["rows_in"] = s["rows"]
else:
    acc = out + "/validate/accepted.parquet"
    s = split_with(eng, acc, sys.argv[5], out + "/split", strategy=sys.argv[7], log=log)
print("SUMMARY", json.dumps({k: v for k, v in s.items() if k in ("rows_in", "accepted", "train", "engine", "scored", "workers")}))
"""


def _tree_rss(proc) -> int:
    "Bytes resident in `proc` and all its descendants now (worker processes included)."
    import psutil
    total = 0
    for q in [proc, *proc.children(recursive=True)]:
        try: total += q.memory_info().rss
        except psutil.Error: pass  # ended between the listing and the reading
    return total


def run_stage(stage: str, engine: str, raw: Path, out: Path, rows: int, code: Path = ROOT, model: Path = ROOT / "artifacts" / "model",
              strategy: str = "auto") -> dict:
    """One stage in a fresh process that imports flex_ml from `code` (a checkout); `strategy` is split's. `peak_rss_mb`:
    the largest single process (getrusage); `peak_tree_rss_mb`: the most the process tree held at once, sampled every 0.1 s."""
    import psutil
    t0 = time.perf_counter()
    env = {**__import__("os").environ, "PYTHONPATH": str(code)}
    p = subprocess.Popen([sys.executable, "-c", PEAK, sys.executable, "-c", STAGE, stage, engine.split("@")[0], str(raw), str(out), str(SCHEMA), str(model), strategy],
                         cwd=code, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    import threading
    streams = {}
    readers = [threading.Thread(target=lambda k, f: streams.__setitem__(k, f.read()), args=(k, f)) for k, f in (("out", p.stdout), ("err", p.stderr))]
    for t in readers: t.start()
    tree, proc = 0, psutil.Process(p.pid)
    while True:  # memory sampled every 0.1 s; the wait returns as the stage ends, so its time is not rounded up to a sample
        tree = max(tree, _tree_rss(proc))
        try: p.wait(timeout=0.1); break
        except subprocess.TimeoutExpired: pass
    for t in readers: t.join()
    seconds = time.perf_counter() - t0
    peak = [l for l in streams["out"].splitlines() if l.startswith("PEAK")]
    if not peak or peak[0].split()[1] != "0": raise SystemExit(f"{stage} on {engine} failed:\n{streams['out'][-3000:]}\n{streams['err'][-3000:]}")
    return dict(seconds=round(seconds, 2), rows_per_s=round(rows / seconds), peak_rss_mb=round(int(peak[0].split()[2]) / 1024),
                peak_tree_rss_mb=round(tree / 2**20))


def run_repeated(repeat: int, *args, **kwargs) -> dict:
    "`run_stage` `repeat` times: the run with the median seconds, and every run's seconds."
    runs = sorted((run_stage(*args, **kwargs) for _ in range(repeat)), key=lambda r: r["seconds"])
    return {**runs[len(runs) // 2], **({"seconds_runs": [r["seconds"] for r in runs]} if repeat > 1 else {})}


def worktree(rev: str, work: Path) -> Path:
    "A detached git worktree of this repository at `rev` under `work` (made once): the code a baseline runs."
    rev = subprocess.run(["git", "rev-parse", "--short", rev], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    tree = work / f"code-{rev}"
    if not tree.exists(): subprocess.run(["git", "worktree", "add", "--detach", str(tree), rev], cwd=ROOT, check=True, capture_output=True)
    return tree


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000])
    ap.add_argument("--spark-rows", type=int, nargs="*", default=[1_000_000])
    ap.add_argument("--pandas-rows", type=int, nargs="*", default=[1_000_000])
    ap.add_argument("--baseline-rev", help="also run the in-memory path as the code was at this git revision")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "flex-ml-scale")
    ap.add_argument("--model", type=Path, default=ROOT / "artifacts" / "model", help="the export `score` uses")
    ap.add_argument("--stages", nargs="+", default=["validate", "split", "score"])
    ap.add_argument("--repeat", type=int, default=3, help="runs per stage at 1M rows or fewer (median reported); not on Spark")
    a = ap.parse_args()
    if "score" in a.stages and not (a.model / "manifest.json").exists():
        raise SystemExit(f"{a.model} holds no export for the score stage: run `make repro` first, or pass --model")
    codes = {"pandas": ROOT, "embedded": ROOT, "spark": ROOT}
    if a.baseline_rev:
        tree = worktree(a.baseline_rev, a.work)
        codes[f"pandas@{tree.name.removeprefix('code-')}"] = tree
    from flex_ml.generate import generate
    runs = []
    for n in sorted(set(a.rows) | set(a.spark_rows) | set(a.pandas_rows)):
        data = a.work / f"credit-{n}"
        if not (data / "manifest.json").exists() or json.loads((data / "manifest.json").read_text())["rows"] != n:
            t0 = time.perf_counter()
            generate(n, data, SCHEMA, SOURCE, seed=0, chunk_rows=1_000_000, log=lambda m: print(m, file=sys.stderr))
            print(f"generated {n:,} rows in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        sizes = {"pandas": a.pandas_rows, "embedded": a.rows, "spark": a.spark_rows}
        engines = [e for e in codes if n in sizes[e.split("@")[0]]]
        for engine in engines:
            out = a.work / f"out-{engine}-{n}"
            repeat = a.repeat if n <= 1_000_000 and engine != "spark" else 1
            stages = {s: run_repeated(repeat, s, engine, data / "data.csv", out, n, codes[engine], a.model.resolve()) for s in a.stages}
            runs.append(dict(rows=n, engine=engine, stages=stages))
            print(json.dumps(runs[-1]), file=sys.stderr, flush=True)
    emb = sorted((r for r in runs if r["engine"] == "embedded"), key=lambda r: r["rows"])
    small, large = emb[0], emb[-1]
    def speedup(baseline: str) -> dict:
        base = {r["rows"]: r for r in runs if r["engine"] == baseline}
        return {f"{s}@{n}": round(r["stages"][s]["rows_per_s"] / base[n]["stages"][s]["rows_per_s"], 2)
                for r in emb if r["rows"] in base for n in [r["rows"]] for s in r["stages"]}
    result = dict(rows=large["rows"], engine="embedded", stages=large["stages"],
                  growth={s: round(large["stages"][s]["seconds"] / small["stages"][s]["seconds"], 2) for s in large["stages"]},
                  growth_rows=large["rows"] / small["rows"], speedup_vs_pandas=speedup("pandas"),
                  **{f"speedup_vs_{e}": speedup(e) for e in codes if "@" in e},
                  runs=runs, machine=dict(cpus=__import__("os").cpu_count()))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

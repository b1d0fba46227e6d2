"""Training at scale: the streamed input (Parquet shards, statistics in one pass, rows encoded once into blocks,
a seeded block shuffle) against the in-memory path, on generated credit rows; 1 vs 2 workers; time to resume.

For each size: generate the rows (`flex_ml.generate`), validate and split them with the streaming engine, then
`flex-ml train` for 2 epochs through each input in its own process. Per path: seconds of the second epoch (from the
times Keras prints its epoch lines; the first carries tracing), training rows per second in it, the whole command's
wall time and the process's peak RSS. The in-memory path runs only up to `--memory-max-rows` (at 10M rows it would
need about 36 GB). `resume_s`: a streamed run killed (SIGKILL) after its first epoch and started again: seconds from
the new start until it trains again (its first resumed epoch's end, less one epoch). `workers`:
benchmarks/train_workers.py on the credit split (one process against two workers on loopback: on 2 cores that is
the overhead of synchronous all-reduce, not a speed-up). `--streamed-workers N` also trains the streamed split with
`flex-ml train --workers N` on loopback (`streamed_workers`): its wall time, when each worker finished encoding its own
blocks and how many rows it encoded, and its second epoch's seconds, beside the one-process streamed run.

    .venv/bin/python benchmarks/train_scale.py [--rows 1000000 10000000] [--memory-max-rows 2000000] [--out F.json]
                                               [--paths stream memory] [--no-resume] [--streamed-workers 2]
"""
import argparse
import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
GENERATED = ROOT / "schemas" / "credit_default_generated.yaml"
# the CLI in one process, then that process's own peak resident memory
PEAK = ("import resource, sys\nfrom flex_ml.cli import app\ntry: app(sys.argv[1:])\nexcept SystemExit as e:\n    if e.code: raise\n"
        "print('peak_rss_mb', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, flush=True)")
EPOCH_END = re.compile(r"^\s*\d+/\d+ - ")  # Keras' verbose=2 line at the end of each epoch


def write_params(path: Path, raw: Path, **train):
    p = yaml.safe_load((ROOT / "params.yaml").read_text())
    p["dataset"] = {"schema": str(GENERATED), "raw": str(raw)}
    p["engine"].update(in_memory_max_mb=0)
    p["train"].update({"epochs": 2, "patience": 2, **train})
    path.write_text(yaml.safe_dump(p))


def prepare(d: Path, rows: int):
    "Generated rows validated and split into shards (kept in `d`: a second run reuses them)."
    if (d / "s" / "test.parquet").exists(): return
    from flex_ml.generate import generate
    t0 = time.perf_counter()
    generate(rows, d / "g", GENERATED, ROOT / "data" / "credit-default" / "default_of_credit_card_clients.csv", seed=1,
             chunk_rows=500_000, log=lambda m: None)
    write_params(d / "params.yaml", d / "g" / "data.csv")
    for args in (["validate", "--params", "params.yaml", "--out", "v"],
                 ["split", "--params", "params.yaml", "--input", "v/accepted.parquet", "--out", "s"]):
        subprocess.run([sys.executable, "-m", "flex_ml.cli", *args], cwd=d, check=True, capture_output=True)
    print(f"{rows:,} rows generated, validated and split in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)


def timed_train(d: Path, params: str, out: str, kill_after_epochs: int | None = None) -> dict:
    "One train command; the times of its epoch lines, its wall time and peak RSS (or, killed, when it was)."
    cmd = [sys.executable, "-c", PEAK, "train", "--split-dir", "s", "--out", out, "--params", params]
    t0, ends, peak = time.perf_counter(), [], None
    proc = subprocess.Popen(cmd, cwd=d, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout:
        if EPOCH_END.match(line): ends.append(time.perf_counter() - t0)
        if line.startswith("peak_rss_mb"): peak = float(line.split()[1])
        if kill_after_epochs is not None and len(ends) == kill_after_epochs:
            proc.send_signal(signal.SIGKILL)
            break
    rc = proc.wait()
    if kill_after_epochs is None and rc != 0: raise SystemExit(f"train {params} exited {rc}")
    return dict(epoch_ends_s=ends, wall_s=time.perf_counter() - t0, peak_rss_mb=peak)


WORKER_LINE = re.compile(r"^\[worker (\d+)\] (.*)$")  # the launcher's prefix on each worker's lines
ENCODED = re.compile(r"^encoded ([\d,]+) of ([\d,]+) rows into \d+ blocks \(this worker's")


def timed_workers(d: Path, params: str, out: str, workers: int) -> dict:
    "`flex-ml train --workers N`: wall time; per worker, when it finished encoding its training blocks, their rows, its epochs' ends."
    cmd = [sys.executable, "-m", "flex_ml.cli", "train", "--workers", str(workers), "--timeout", "7200", "--split-dir", "s",
           "--out", out, "--params", params]
    t0, encoded, ends = time.perf_counter(), {}, {}
    proc = subprocess.Popen(cmd, cwd=d, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout:
        if (m := WORKER_LINE.match(line)) is None: continue
        i, text, now = int(m[1]), m[2], time.perf_counter() - t0
        if (e := ENCODED.match(text)) and e[1] == e[2]: encoded[i] = dict(rows=int(e[1].replace(",", "")), done_at_s=round(now, 1))
        if EPOCH_END.match(text): ends.setdefault(i, []).append(now)
    if proc.wait() != 0: raise SystemExit(f"train --workers {workers} exited {proc.returncode}")
    return dict(wall_s=round(time.perf_counter() - t0, 1), encoded=encoded,
                epoch_s={i: round(e[1] - e[0], 1) for i, e in ends.items() if len(e) > 1})


def one_size(rows: int, work: Path, memory_max_rows: int, paths_wanted=("stream", "memory"), resume: bool = True,
             streamed_workers: int = 0) -> dict:
    d = work / f"rows-{rows}"
    d.mkdir(parents=True, exist_ok=True)
    prepare(d, rows)
    paths = {}
    for name in paths_wanted:
        if name == "memory" and rows > memory_max_rows: continue
        write_params(d / f"{name}.yaml", d / "g" / "data.csv", input=name)
        t = timed_train(d, f"{name}.yaml", f"t_{name}")
        n_train = json.loads((d / f"t_{name}" / "summary.json").read_text())["n_train"]
        epoch_s = t["epoch_ends_s"][1] - t["epoch_ends_s"][0]
        paths[name] = dict(rows_per_s=round(n_train / epoch_s), epoch_s=round(epoch_s, 1), wall_s=round(t["wall_s"], 1),
                           peak_rss_mb=round(t["peak_rss_mb"]), n_train=n_train)
        print(f"{rows:,} rows, {name}: {paths[name]}", file=sys.stderr, flush=True)
    out = dict(rows=rows, paths=paths)
    if streamed_workers:
        write_params(d / "stream.yaml", d / "g" / "data.csv", input="stream")
        out["streamed_workers"] = dict(workers=streamed_workers, **timed_workers(d, "stream.yaml", "t_workers", streamed_workers))
        print(f"{rows:,} rows, {streamed_workers} workers: {out['streamed_workers']}", file=sys.stderr, flush=True)
    if not resume: return out
    write_params(d / "resume.yaml", d / "g" / "data.csv", input="stream", epochs=3, patience=3)
    timed_train(d, "resume.yaml", "t_resume", kill_after_epochs=1)
    again = timed_train(d, "resume.yaml", "t_resume")
    resume_s = again["epoch_ends_s"][0] - paths["stream"]["epoch_s"]
    return dict(out, resume_s=round(resume_s, 1), resume_wall_s=round(again["wall_s"], 1))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, nargs="+", default=[1_000_000])
    ap.add_argument("--memory-max-rows", type=int, default=2_000_000)
    ap.add_argument("--work", type=Path, default=Path("/tmp/flex-ml-train-scale"))
    ap.add_argument("--out", type=Path)
    ap.add_argument("--paths", nargs="+", default=["stream", "memory"], choices=["stream", "memory"])
    ap.add_argument("--no-resume", action="store_true", help="skip the kill-and-resume run")
    ap.add_argument("--no-workers", action="store_true", help="skip benchmarks/train_workers.py")
    ap.add_argument("--streamed-workers", type=int, default=0, help="also train the streamed split with this many workers")
    a = ap.parse_args()
    sizes = [one_size(n, a.work, a.memory_max_rows, a.paths, not a.no_resume, a.streamed_workers) for n in a.rows]
    workers = None if a.no_workers else json.loads(subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "train_workers.py")], cwd=ROOT, check=True, capture_output=True, text=True).stdout)
    result = dict(rows=[s["rows"] for s in sizes], paths={str(s["rows"]): s["paths"] for s in sizes}, workers=workers,
                  resume_s={str(s["rows"]): s.get("resume_s") for s in sizes}, sizes=sizes,
                  machine=dict(cores=__import__("os").cpu_count()))
    text = json.dumps(result, indent=2)
    print(text)
    if a.out: a.out.write_text(text + "\n")


if __name__ == "__main__":
    main()

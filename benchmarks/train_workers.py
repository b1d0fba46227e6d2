"""Multi-worker training study: the train stage as one process (train.distribute none) against 2 TensorFlow
workers on loopback (multi_worker, `flex-ml train --workers 2`), on the pipeline's own split with
params.yaml's model. Prints one JSON object: per way, the fit's rows/s (training rows x epochs / fit
seconds) and seconds per epoch, from the chief's own "trained in" line, and the wall time of the command.

On one machine the workers share its cores, so this measures the overhead of synchronous data-parallel
training (the all-reduce of every step over gRPC, two processes' start), not a speed-up: a speed-up needs
workers on separate machines (deploy/k8s/train-job.yaml).

    .venv/bin/python benchmarks/train_workers.py [--split-dir artifacts/split] [--params params.yaml] [--epochs 3]
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def run_way(args: list[str], split_dir: Path, params: Path, out: Path) -> dict:
    "One `flex-ml train` run; the chief's fit seconds and epochs, and the command's wall time."
    cmd = [sys.executable, "-m", "flex_ml.cli", "train", "--split-dir", str(split_dir), "--out", str(out), "--params", str(params), *args]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    wall = time.perf_counter() - t0
    if r.returncode != 0: sys.exit(f"{' '.join(cmd)} failed:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
    # the chief's line: "trained in 12.3 s: 3 epochs, best 3" (prefixed "[worker 0] " under the launcher)
    fit_s, epochs = next((float(m[1]), int(m[2])) for m in re.finditer(r"^(?:\[worker 0\] )?trained in ([\d.]+) s: (\d+) epochs",
                                                                       r.stdout + r.stderr, re.M))
    n_train = json.loads((out / "summary.json").read_text())["n_train"]
    return dict(rows_per_s=round(n_train * epochs / fit_s), epoch_s=round(fit_s / epochs, 2), epochs=epochs,
                fit_s=round(fit_s, 1), wall_s=round(wall, 1))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--split-dir", type=Path, default=ROOT / "artifacts" / "split")
    ap.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    ap.add_argument("--epochs", type=int, default=3, help="epochs per run (early stopping off: every run trains them all)")
    a = ap.parse_args()
    p = yaml.safe_load(a.params.read_text())
    # the network's fit alone: no teacher GBDT (its trees are the same in both ways), a fixed number of epochs
    p["train"].update(epochs=a.epochs, patience=a.epochs, teacher_weight=0.0)
    p["dataset"] = {k: str((a.params.parent / v).resolve()) for k, v in p["dataset"].items()}
    with tempfile.TemporaryDirectory() as tmp:
        params = Path(tmp) / "params.yaml"
        params.write_text(yaml.safe_dump(p))
        ways = {"one_process": run_way(["--distribute", "none"], a.split_dir, params, Path(tmp) / "one"),
                "two_workers_loopback": run_way(["--workers", "2"], a.split_dir, params, Path(tmp) / "two")}
        n_train = json.loads((Path(tmp) / "one" / "summary.json").read_text())["n_train"]
    print(json.dumps(dict(rows=n_train, cores=os.cpu_count(), workers=ways,
                          overhead=round(ways["two_workers_loopback"]["epoch_s"] / ways["one_process"]["epoch_s"], 2),
                          note="2 workers share this machine's cores: the figure is the overhead of synchronous "
                               "multi-worker training, not a speed-up"), indent=2))


if __name__ == "__main__":
    main()

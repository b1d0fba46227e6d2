"""Pipeline benchmark: a clean clone of the committed project, then each `dvc repro` stage timed
with its peak memory, a no-op `dvc repro`, and the test AUC of the model beside the baselines
from the same run. Prints one JSON object.

    python benchmarks/pipeline.py [--keep DIR]

Targets (issue 2): full repro under 120 s on 2 cores, no-op repro under 2 s, model test AUC >= 0.78
and above the gradient-boosted baseline.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
STAGES = ["validate", "split", "profile", "train", "evaluate", "export", "report"]


def timed(cmd, cwd, env):
    "Run `cmd`; return (wall seconds, peak RSS MiB of it and its descendants, stdout)."
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = p.stdout.read()
    _, status, usage = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{out[-3000:]}")
    return wall, usage.ru_maxrss / 1024, out  # ru_maxrss is KiB on Linux


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keep", type=Path, help="run in this folder and keep it (default: a temporary one)")
    args = ap.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="flex-ml-bench-"))
    if work.exists(): shutil.rmtree(work)
    subprocess.run(["git", "clone", "-q", str(ROOT), str(work)], check=True)
    env = dict(os.environ, PATH=f"{BIN}:{os.environ['PATH']}")
    env.setdefault("FLEX_ML_DATA_MIRROR", str(ROOT.parent / "shared" / "data"))
    result = {"machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]}, "stages": {}}
    wall, rss, _ = timed(["flex-ml", "fetch", "--timeout", "5"], work, env)
    result["fetch"] = {"seconds": round(wall, 2), "peak_rss_mib": round(rss, 1)}
    for stage in STAGES:
        wall, rss, _ = timed(["dvc", "repro", "--single-item", stage], work, env)
        result["stages"][stage] = {"seconds": round(wall, 2), "peak_rss_mib": round(rss, 1)}
    result["full_repro_seconds"] = round(sum(s["seconds"] for s in result["stages"].values()), 2)
    noop = [timed(["dvc", "repro"], work, env)[0] for _ in range(3)]
    result["noop_repro_seconds"] = round(statistics.median(noop), 3)
    m = json.loads((work / "artifacts/evaluate/live/metrics.json").read_text())["test"]
    result["test_auc"] = {name: m[name]["auc"] for name in m}
    best = max(v for k, v in result["test_auc"].items() if k != "model")
    result["model_minus_best_baseline_auc"] = round(result["test_auc"]["model"] - best, 6)
    result["targets"] = {"full_repro_under_120s": result["full_repro_seconds"] < 120,
                         "noop_repro_under_2s": result["noop_repro_seconds"] < 2,
                         "model_auc_at_least_0.78": result["test_auc"]["model"] >= 0.78,
                         "model_beats_gbdt": result["test_auc"]["model"] > result["test_auc"]["baseline_gbdt"]}
    print(json.dumps(result, indent=2))
    if not args.keep: shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

"""The whole pipeline at scale: `dvc repro` on a generated dataset, stage by stage; prints one JSON object.

    python benchmarks/pipeline_scale.py [--rows 1000000 10000000] [--epochs 3] [--stages validate split profile]
                                        [--work /tmp/flex-ml-pipeline-scale]

For each size: makes the dataset with `flex-ml generate` (the real credit rows, jittered; seed 0),
clones this repository's last commit into a scratch project, points `dataset.raw` and
`dataset.schema` at the dataset (nothing else in params.yaml changes, except `train.epochs` when
`--epochs` is given: at ten million rows a full training run is an hour on two cores, and the
seconds per epoch are what grow with the rows), and runs `dvc repro -s STAGE` for every stage in
the pipeline's order, each under a parent that reports the peak RSS of the stage's process tree
(`getrusage(RUSAGE_CHILDREN)`). Then a second `dvc repro` must do nothing (`noop_s`; `noop_ran` lists
any stage it ran). `--stages` runs the first stages only (the data stages take minutes at 10M, training
an hour); the second run is then `dvc repro` of the last of them, which checks every stage before it.
The scratch project reads its own copy of the generated rows' schema, so edits to this checkout during
a long run cannot change a dependency under it.
`growth`: time(largest)/time(smallest) per stage, for rows that grew by `growth_rows`.
Progress goes to stderr, with each stage's figures as it ends, so a cut-short run keeps its numbers.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "schemas" / "credit_default_generated.yaml"
SOURCE = ROOT / "data" / "credit-default" / "default_of_credit_card_clients.csv"
STAGES = ("validate", "split", "profile", "train", "evaluate", "export", "report")
PEAK = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
        "print('PEAK', r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")


def log(m: str) -> None:
    print(m, file=sys.stderr, flush=True)


def dataset(n: int, work: Path) -> Path:
    "The generated dataset of `n` rows (made once, reused while its manifest says `n`)."
    from flex_ml.generate import generate
    data = work / f"credit-{n}"
    manifest = data / "manifest.json"
    if not manifest.exists() or json.loads(manifest.read_text())["rows"] != n:
        t0 = time.perf_counter()
        generate(n, data, SCHEMA, SOURCE, seed=0, chunk_rows=1_000_000, log=log)
        log(f"generated {n:,} rows in {time.perf_counter() - t0:.0f} s")
    return data / "data.csv"


def scratch_project(n: int, raw: Path, work: Path, epochs: int | None) -> Path:
    "A clone of the last commit whose params.yaml reads `raw` (and trains `epochs` epochs when given)."
    proj = work / f"project-{n}"
    if proj.exists(): subprocess.run(["rm", "-rf", str(proj)], check=True)
    subprocess.run(["git", "clone", "-q", str(ROOT), str(proj)], check=True)
    (proj / "data").mkdir(exist_ok=True)
    (proj / "data" / "credit-default").symlink_to(SOURCE.parent)  # data.dvc's output: the real file, not re-fetched
    params = yaml.safe_load((proj / "params.yaml").read_text())
    params["dataset"].update(raw=str(raw), schema=str(SCHEMA.relative_to(ROOT)))  # the clone's copy
    if epochs: params["train"]["epochs"] = epochs
    (proj / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return proj


def run_stage(proj: Path, stage: str, rows: int) -> dict:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", PEAK, "dvc", "repro", "-s", stage], cwd=proj, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    peak = [line for line in r.stdout.splitlines() if line.startswith("PEAK")]
    if not peak or peak[0].split()[1] != "0":
        raise SystemExit(f"stage {stage} failed:\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}")
    return dict(seconds=round(seconds, 1), rows_per_s=round(rows / seconds), peak_rss_mb=round(int(peak[0].split()[2]) / 1024))


def run_size(n: int, work: Path, epochs: int | None, names=STAGES) -> dict:
    proj = scratch_project(n, dataset(n, work), work, epochs)
    stages = {}
    for s in names:
        stages[s] = run_stage(proj, s, n)
        log(f"{n:,} rows: {s} {json.dumps(stages[s])}")
    t0 = time.perf_counter()
    r = subprocess.run(["dvc", "repro", *([] if tuple(names) == STAGES else [names[-1]])], cwd=proj, capture_output=True, text=True,
                       env={**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"})
    noop = time.perf_counter() - t0
    if r.returncode: raise SystemExit(f"the second dvc repro failed:\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}")
    ran = [line for line in r.stdout.splitlines() if line.startswith("Running stage")]
    split = json.loads((proj / "artifacts" / "split" / "summary.json").read_text()) if "split" in names else None
    if "evaluate" not in names:
        return dict(rows=n, engine="embedded", stages=stages, noop_s=round(noop, 1), noop_ran=ran,
                    split_rows={k: split[k]["rows"] for k in ("train", "valid", "test")} if split else None)
    metrics = json.loads((proj / "artifacts" / "evaluate" / "live" / "metrics.json").read_text())["test"]
    train = json.loads((proj / "artifacts" / "train" / "summary.json").read_text()) if (proj / "artifacts" / "train" / "summary.json").exists() else {}
    return dict(rows=n, engine="embedded", stages=stages, noop_s=round(noop, 1), noop_ran=ran,
                split_rows={k: split[k]["rows"] for k in ("train", "valid", "test")},
                train_streamed=split["train"]["rows"] > yaml.safe_load((proj / "params.yaml").read_text())["train"]["in_memory_max_rows"],
                epochs_run=train.get("epochs_run"), best_epoch=train.get("best_epoch"),
                test_auc={k: v["auc"] for k, v in metrics.items()})


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000])
    ap.add_argument("--epochs", type=int, default=None, help="train.epochs for the run (default: params.yaml's)")
    ap.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES), help="the first stages only, in order")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "flex-ml-pipeline-scale")
    a = ap.parse_args()
    a.work.mkdir(parents=True, exist_ok=True)
    names = STAGES[:len(a.stages)]
    if list(names) != a.stages: raise SystemExit(f"--stages must be the first stages of {list(STAGES)}, in order")
    runs = []
    for n in sorted(a.rows):
        runs.append(run_size(n, a.work, a.epochs, names))
        log(json.dumps(runs[-1]))
    small, large = runs[0], runs[-1]
    result = dict(rows=large["rows"], engine="embedded", stages=large["stages"],
                  growth={s: round(large["stages"][s]["seconds"] / small["stages"][s]["seconds"], 2) for s in names},
                  growth_rows=large["rows"] / small["rows"], epochs_override=a.epochs, runs=runs,
                  machine=dict(cpus=os.cpu_count()))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

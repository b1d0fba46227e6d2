"""What the model studies (seeds, cross-fit, training speed) share: a command line naming the
pipeline's split folder and parameter file, and loading them, checked, with one message when the
split is not there yet."""
import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def study_parser(doc: str) -> argparse.ArgumentParser:
    "An argument parser with the studies' `--split-dir` and `--params`; a study adds its own options."
    ap = argparse.ArgumentParser(description=doc.split("\n")[0])
    ap.add_argument("--split-dir", default=str(ROOT / "artifacts/split"), help="the split stage's output")
    ap.add_argument("--params", default=str(ROOT / "params.yaml"))
    return ap


def load_study(a: argparse.Namespace, parts=("train", "valid", "test")):
    "`(params, schema, split folder, [frames of parts])`, params checked against their contract like every flex-ml verb."
    split = Path(a.split_dir)
    missing = [n for n in parts if not (split / f"{n}.parquet").exists()]
    if missing: sys.exit(f"{split} has no {missing[0]}.parquet: run `make repro` (or `dvc repro split`) first")
    import pandas as pd
    from flex_ml.params import load_params
    from flex_ml.schema import load_schema
    params = load_params(a.params)
    schema = load_schema(ROOT / params["dataset"]["schema"])
    return params, schema, split, [pd.read_parquet(split / f"{n}.parquet") for n in parts]

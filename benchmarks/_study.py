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


def fit_seeds(name: str, train, valid, test, schema, model_params: dict, train_params: dict, seeds,
              targets=None) -> tuple[list, list]:
    """Train the Keras model once per seed (the train stage's `train_model`, with `train_params` and the training
    `targets` of `flex_ml.teacher.training_targets`), each scored on valid and test: `(rows, test_scores)`, a row
    per seed (valid and test AUC, best epoch, seconds)."""
    import contextlib
    import time
    from sklearn.metrics import roc_auc_score
    from flex_ml.model import predict_scores
    from flex_ml.split import labels
    from flex_ml.train import train_model
    yv, yt = labels(valid, schema), labels(test, schema)
    tp, rows, test_scores = train_params, [], []
    for seed in seeds:
        t1 = time.perf_counter()
        with contextlib.redirect_stdout(sys.stderr):  # Keras' early-stopping lines: stdout is the JSON
            model, _, summary = train_model(train, valid, schema, model_params, epochs=tp.get("epochs", 30),
                                            batch_size=tp.get("batch_size", 512), patience=tp.get("patience", 5),
                                            seed=seed, class_weight=tp.get("class_weight", "none"), verbose=0, targets=targets)
        pv, pt = predict_scores(model, valid, schema), predict_scores(model, test, schema)
        test_scores.append(pt)
        rows.append(dict(seed=seed, valid_auc=round(float(roc_auc_score(yv, pv)), 6),
                         test_auc=round(float(roc_auc_score(yt, pt)), 6), best_epoch=summary["best_epoch"],
                         seconds=round(time.perf_counter() - t1, 1)))
        print(f"{name} seed {seed}: valid {rows[-1]['valid_auc']:.4f} test {rows[-1]['test_auc']:.4f} "
              f"({rows[-1]['seconds']} s)", file=sys.stderr, flush=True)
    return rows, test_scores

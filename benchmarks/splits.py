"""Split study: how much of the test AUC is the particular test split. Prints one JSON object
(about 1 minute per split on 2 cores).

    .venv/bin/python benchmarks/splits.py [--splits 5] [--accepted artifacts/validate/accepted.parquet] [--params params.yaml]

The pipeline's figure comes from one stratified split (`split.seed`) with a 6,000-row test set, whose
AUC has a standard error of about 0.007. This re-draws the train/valid/test split with `--splits`
different seeds (the split stage's own `split_table`, same fractions), and on each trains the Keras
model of params.yaml and fits the logistic and GBDT baselines exactly as the train and evaluate
stages do. It reports, per split and over the splits, the valid and test AUC of each, and the paired
difference model minus GBDT on test (the same rows, so most of the split's luck cancels).
The split seed of params.yaml is included, so its row matches the pipeline's own figures.
"""
import argparse
import contextlib
import json
import statistics
import sys
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def stats_of(values):
    return dict(mean=round(statistics.mean(values), 6), sd=round(statistics.stdev(values), 6) if len(values) > 1 else 0.0,
                min=min(values), max=max(values))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--splits", type=int, default=5, help="split seeds, the pipeline's own first")
    ap.add_argument("--accepted", default=str(ROOT / "artifacts/validate/accepted.parquet"), help="the validate stage's output")
    ap.add_argument("--params", default=str(ROOT / "params.yaml"))
    a = ap.parse_args()
    if not Path(a.accepted).exists():
        sys.exit(f"{a.accepted} does not exist: run `make repro` (or `dvc repro validate`) first")
    from sklearn.metrics import roc_auc_score
    from flex_ml.baselines import fit_baselines
    from flex_ml.features import fit_feature_stats
    from flex_ml.model import predict_scores
    from flex_ml.params import load_params
    from flex_ml.schema import load_schema
    from flex_ml.split import labels, split_table
    from flex_ml.teacher import training_targets
    from flex_ml.train import train_model

    params = load_params(a.params)  # checked against its contract, like every flex-ml verb
    schema = load_schema(ROOT / params["dataset"]["schema"])
    accepted = pd.read_parquet(a.accepted)
    sp, tp = params["split"], params["train"]
    first = sp.get("seed", 42)
    seeds = [first] + [s for s in range(1, a.splits + 1) if s != first][: a.splits - 1]
    rows = []
    for seed in seeds:
        t0 = time.perf_counter()
        parts = split_table(accepted, schema, sp.get("valid_fraction", 0.2), sp.get("test_fraction", 0.2), seed,
                            sp.get("strategy", "auto"))
        train, valid, test = parts["train"], parts["valid"], parts["test"]
        yv, yt = labels(valid, schema), labels(test, schema)
        targets, _ = training_targets(train, valid, schema, params, verbose=False)
        with contextlib.redirect_stdout(sys.stderr):  # Keras' early-stopping lines: stdout is the JSON
            model, _, summary = train_model(train, valid, schema, params["model"], epochs=tp.get("epochs", 30),
                                            batch_size=tp.get("batch_size", 512), patience=tp.get("patience", 5),
                                            seed=tp.get("seed", 42), class_weight=tp.get("class_weight", "none"), verbose=0,
                                            targets=targets)
        scores = {"model": (predict_scores(model, valid, schema), predict_scores(model, test, schema))}
        for name, est in fit_baselines(train, valid, schema, fit_feature_stats(schema, train), params.get("baselines")).items():
            scores[name] = (est.predict_proba(valid)[:, 1], est.predict_proba(test)[:, 1])
        row = dict(split_seed=seed, best_epoch=summary["best_epoch"])
        for name, (pv, pt) in scores.items():
            row[name] = dict(valid_auc=round(float(roc_auc_score(yv, pv)), 6), test_auc=round(float(roc_auc_score(yt, pt)), 6))
        row["model_minus_gbdt_test"] = round(row["model"]["test_auc"] - row["baseline_gbdt"]["test_auc"], 6)
        row["seconds"] = round(time.perf_counter() - t0, 1)
        rows.append(row)
        print(f"split {seed}: model test {row['model']['test_auc']:.4f}, gbdt {row['baseline_gbdt']['test_auc']:.4f}, "
              f"logistic {row['baseline_logistic']['test_auc']:.4f}", file=sys.stderr, flush=True)
    out = {"split_seeds": seeds, "pipeline_split_seed": first, "model": params["model"], "runs": rows, "summary": {}}
    for name in scores:
        out["summary"][name] = {k: stats_of([r[name][k] for r in rows]) for k in ("valid_auc", "test_auc")}
    diffs = [r["model_minus_gbdt_test"] for r in rows]
    out["summary"]["model_minus_gbdt_test"] = dict(**stats_of(diffs), splits_model_ahead=sum(d > 0 for d in diffs))
    out["summary"]["splits_model_test_at_least_0_78"] = sum(r["model"]["test_auc"] >= 0.78 for r in rows)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()

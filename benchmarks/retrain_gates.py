"""Retrain gates study: how often `flex-ml retrain`'s judge promotes a candidate that is not better,
and how often it fails a fair one, on hold-outs of the sizes retrain meets. Prints one JSON object.

    .venv/bin/python benchmarks/retrain_gates.py [--draws 40] [--sizes 500 1200] [--resamples 200]

Champion: the pipeline's model. Candidates, scored on the same rows: the gradient-boosted baseline
(test AUC level with the model: a promotion is a false one) and the logistic baseline (worse by
about 0.011 AUC). Hold-outs are drawn without replacement from the test split of the last
`dvc repro` (run `make repro` first). For each size and candidate: the share of draws in which each
gate passes, and in which the candidate would be promoted.
"""
import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--draws", type=int, default=40, help="hold-outs per size")
    ap.add_argument("--sizes", type=int, nargs="+", default=[500, 1200], help="hold-out sizes (rows)")
    ap.add_argument("--resamples", type=int, default=200, help="bootstrap resamples per judgement")
    ap.add_argument("--project", default=str(ROOT), help="a project folder after `dvc repro`")
    a = ap.parse_args()
    p = Path(a.project)
    if not (p / "artifacts/evaluate/test_scores.parquet").exists():
        sys.exit(f"{p} has no artifacts/evaluate/test_scores.parquet: run `make repro` first")
    from flex_ml.retrain_gate import RetrainGates, judge
    from flex_ml.schema import load_schema
    from flex_ml.split import labels

    schema = load_schema(p / "artifacts/model/schema.yaml")
    scores = pd.read_parquet(p / "artifacts/evaluate/test_scores.parquet")
    test = pd.read_parquet(p / "artifacts/split/test.parquet")
    assert (scores["_line"].to_numpy() == test["_line"].to_numpy()).all()
    y = labels(scores, schema)
    threshold = json.loads((p / "artifacts/model/metadata.json").read_text())["threshold"]
    rng = np.random.default_rng(7)
    out, t0 = {"draws": a.draws, "resamples": a.resamples, "sizes": {}}, time.perf_counter()
    for n in a.sizes:
        out["sizes"][n] = {}
        for cand in ("baseline_gbdt", "baseline_logistic"):
            passed = {"auc": 0, "calibration": 0, "fairness": 0, "promoted": 0}
            for d in range(a.draws):
                i = rng.choice(len(y), n, replace=False)
                dec = judge(test.iloc[i].reset_index(drop=True), y[i],
                            dict(scores=scores["score_model"].to_numpy()[i], threshold=threshold, version="champion"),
                            dict(scores=scores[f"score_{cand}"].to_numpy()[i], threshold=threshold, version=cand),
                            schema, RetrainGates(bootstrap_resamples=a.resamples, seed=d))
                g = {c["gate"]: c["passed"] for c in dec["checks"]}
                passed["auc"] += g["auc"]; passed["calibration"] += g["calibration"]
                passed["fairness"] += all(v for k, v in g.items() if k.startswith("fairness"))
                passed["promoted"] += dec["promote"]
            out["sizes"][n][cand] = {("promoted_rate" if k == "promoted" else f"{k}_pass_rate"): round(v / a.draws, 3)
                                     for k, v in passed.items()}
    out["seconds_per_judgement"] = round((time.perf_counter() - t0) / (a.draws * len(a.sizes) * 2), 3)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()

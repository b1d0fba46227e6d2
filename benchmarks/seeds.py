"""Seed study: how much of a test-AUC figure is the model design and how much is the training seed.
Prints one JSON object (about 5 minutes on 2 cores with the default 5 seeds).

    .venv/bin/python benchmarks/seeds.py [--seeds 5] [--split-dir artifacts/split] [--params params.yaml]

A test AUC on 6,000 rows has a standard error of about 0.007, and one network's figure also moves
with its random initialisation and batch order. This trains the Keras model of params.yaml (its
`model` and `train` sections) with `--seeds` different `train.seed` values on the pipeline's own
split, and beside it, in the same run, the same network without the piecewise-linear bins
(`numeric_bins: 0`, `dropout: 0.2`: the design before the bins) as the comparison. The GBDT and
logistic baselines are deterministic and are fitted once, exactly as the evaluate stage does.

For each configuration: valid and test AUC per seed, their mean, standard deviation, minimum and
maximum, the test AUC of the mean score over the seeds (what averaging the fits would give), and
how many seeds beat the GBDT on test. The model design is chosen on valid; test is reported.
"""
import json
import statistics
import sys
import time

import numpy as np

from _study import fit_seeds, load_study, study_parser  # benchmarks/ is on the path when run as a script


def main():
    ap = study_parser(__doc__)
    ap.add_argument("--seeds", type=int, default=5, help="training seeds per configuration")
    a = ap.parse_args()
    params, schema, split, (train, valid, test) = load_study(a)
    from sklearn.metrics import roc_auc_score
    from flex_ml.baselines import fit_baselines
    from flex_ml.features import fit_feature_stats
    from flex_ml.split import labels

    yt = labels(test, schema)
    tp = params["train"]
    configs = {"params_yaml": dict(params["model"]),
               "without_bins": {**params["model"], "numeric_bins": 0, "dropout": 0.2}}

    t0 = time.perf_counter()
    baselines = fit_baselines(train, valid, schema, fit_feature_stats(schema, train), params.get("baselines"))
    base_auc = {k: round(float(roc_auc_score(yt, est.predict_proba(test)[:, 1])), 6) for k, est in baselines.items()}
    out = {"split": str(split), "seeds": list(range(1, a.seeds + 1)), "test_auc_baselines": base_auc,
           "baseline_seconds": round(time.perf_counter() - t0, 1), "configs": {}}
    gbdt = base_auc["baseline_gbdt"]
    from flex_ml.teacher import training_targets
    targets, out["teacher"] = training_targets(train, valid, schema, params, verbose=False)  # the train stage's targets
    for name, mp in configs.items():
        rows, test_scores = fit_seeds(name, train, valid, test, schema, mp, tp, out["seeds"], targets)
        summary = {}
        for k in ("valid_auc", "test_auc"):
            v = [r[k] for r in rows]
            summary[k] = dict(mean=round(statistics.mean(v), 6), sd=round(statistics.stdev(v), 6) if len(v) > 1 else 0.0,
                              min=min(v), max=max(v))
        out["configs"][name] = dict(model=mp, runs=rows, **summary,
                                    test_auc_of_mean_score=round(float(roc_auc_score(yt, np.mean(test_scores, axis=0))), 6),
                                    seeds_beating_gbdt_on_test=sum(r["test_auc"] > gbdt for r in rows),
                                    seeds_at_least_0_78_on_test=sum(r["test_auc"] >= 0.78 for r in rows))
    p, w = out["configs"]["params_yaml"], out["configs"]["without_bins"]
    out["bins_gain"] = dict(valid_auc_mean=round(p["valid_auc"]["mean"] - w["valid_auc"]["mean"], 6),
                            test_auc_mean=round(p["test_auc"]["mean"] - w["test_auc"]["mean"], 6))
    out["model_minus_gbdt_test_auc_mean"] = round(p["test_auc"]["mean"] - gbdt, 6)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()

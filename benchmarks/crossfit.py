"""Cross-fit study: what training on train + valid (K folds, each model early-stopped on its own
held-out fold, their scores averaged) would give the Keras model and the GBDT. Prints one JSON object
(about 5 minutes on 2 cores with 5 folds).

    .venv/bin/python benchmarks/crossfit.py [--folds 5] [--split-dir artifacts/split] [--params params.yaml]

The pipeline trains on train (18,000 rows) and spends valid (6,000) on early stopping, recalibration
and the threshold. Cross-fitting trains every model on (K-1)/K of train + valid and averages K of
them, so it uses more data and ensembles; the out-of-fold scores would then take valid's place for
the threshold. The question for the team is whether that gain is the model's or anyone's: so the
GBDT baseline is cross-fitted the same way, on the same folds, and both are compared on the same
test split as the pipeline's own single fits (the model of params.yaml with `train.seed`, and the
evaluate stage's GBDT). Test is only scored, never used for a choice.
"""
import contextlib
import json
import sys
import time

import numpy as np
import pandas as pd

from _study import load_study, study_parser  # benchmarks/ is on the path when run as a script


def main():
    ap = study_parser(__doc__)
    ap.add_argument("--folds", type=int, default=5, help="folds over train + valid")
    a = ap.parse_args()
    params, schema, split, (train, valid, test) = load_study(a)
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold
    from flex_ml.baselines import fit_baselines
    from flex_ml.features import fit_feature_stats
    from flex_ml.model import predict_scores
    from flex_ml.split import labels
    from flex_ml.teacher import training_targets
    from flex_ml.train import train_model

    full = pd.concat([train, valid], ignore_index=True)
    y, yt = labels(full, schema), labels(test, schema)
    tp, seed = params["train"], params["train"].get("seed", 42)
    fit = lambda tr, va, s: train_model(tr, va, schema, params["model"], epochs=tp.get("epochs", 30),  # noqa: E731
                                        batch_size=tp.get("batch_size", 512), patience=tp.get("patience", 5), seed=s,
                                        class_weight=tp.get("class_weight", "none"), verbose=0, calibration="none",
                                        targets=training_targets(tr, va, schema, params, verbose=False)[0])
    auc = lambda lab, p: round(float(roc_auc_score(lab, p)), 6)  # noqa: E731

    t0 = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):
        single_model = predict_scores(fit(train, valid, seed), test, schema)
    single_gbdt = fit_baselines(train, valid, schema, fit_feature_stats(schema, train), params.get("baselines"))["baseline_gbdt"]
    out = {"split": str(split), "folds": a.folds, "rows_train_plus_valid": len(full), "rows_test": len(test),
           "single_fit": {"model": auc(yt, single_model), "baseline_gbdt": auc(yt, single_gbdt.predict_proba(test)[:, 1]),
                          "seconds": round(time.perf_counter() - t0, 1)}}
    oof = {k: np.zeros(len(full)) for k in ("model", "baseline_gbdt")}
    tests = {k: [] for k in oof}
    secs = {k: 0.0 for k in oof}
    folds = StratifiedKFold(a.folds, shuffle=True, random_state=seed).split(full, y)
    stats = fit_feature_stats(schema, full)
    for k, (tr, ho) in enumerate(folds):
        t = time.perf_counter()
        with contextlib.redirect_stdout(sys.stderr):
            m = fit(full.iloc[tr], full.iloc[ho], seed + k)
        oof["model"][ho] = predict_scores(m, full.iloc[ho], schema); tests["model"].append(predict_scores(m, test, schema))
        secs["model"] += time.perf_counter() - t; t = time.perf_counter()
        g = fit_baselines(full.iloc[tr], full.iloc[ho], schema, stats, params.get("baselines"))["baseline_gbdt"]
        oof["baseline_gbdt"][ho] = g.predict_proba(full.iloc[ho])[:, 1]; tests["baseline_gbdt"].append(g.predict_proba(test)[:, 1])
        secs["baseline_gbdt"] += time.perf_counter() - t
        print(f"fold {k + 1}/{a.folds}: model test {auc(yt, tests['model'][-1]):.4f}, "
              f"GBDT test {auc(yt, tests['baseline_gbdt'][-1]):.4f}", file=sys.stderr, flush=True)
    out["cross_fit"] = {k: {"test_auc_of_mean_score": auc(yt, np.mean(tests[k], axis=0)),
                            "test_auc_by_fold": [auc(yt, p) for p in tests[k]],
                            "out_of_fold_auc": auc(y, oof[k]), "seconds": round(secs[k], 1)} for k in oof}
    cf = out["cross_fit"]
    out["model_minus_gbdt_test_auc"] = {
        "single_fit": round(out["single_fit"]["model"] - out["single_fit"]["baseline_gbdt"], 6),
        "cross_fit": round(cf["model"]["test_auc_of_mean_score"] - cf["baseline_gbdt"]["test_auc_of_mean_score"], 6)}
    out["cross_fit_gain_test_auc"] = {k: round(cf[k]["test_auc_of_mean_score"] - out["single_fit"][k], 6) for k in oof}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()

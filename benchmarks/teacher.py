"""Teacher study: what training on soft targets (`train.teacher_weight` of a GBDT's out-of-fold score, the
rest the label; nbs/04b_teacher.ipynb) does to the Keras model, against the labels alone. Prints one JSON
object (about 5 minutes on 2 cores with the defaults).

    .venv/bin/python benchmarks/teacher.py [--weights 0,0.3,0.5] [--seeds 6] [--split-dir artifacts/split] [--params params.yaml]

Early stopping picks the epoch with the best validation AUC, so the validation AUC it reports is the
maximum of a noisy curve: biased upward, and by more for a noisier curve, which is no fair judge of
a change that smooths the curve. So this study splits the validation split in two (stratified,
seeded): the network early-stops on half A and is judged on half B, which no choice touched. The test
split is scored too, reported and never chosen on. Each weight trains the same seeds; the teacher (the
GBDT of `baselines.gbdt`) is fitted once per run, on train with half A to stop on.
"""
import contextlib
import json
import sys
import time

import numpy as np

from _study import load_study, study_parser  # benchmarks/ is on the path when run as a script


def main():
    ap = study_parser(__doc__)
    ap.add_argument("--weights", default="0,0.3,0.5", help="train.teacher_weight values to compare (0: the labels alone)")
    ap.add_argument("--seeds", type=int, default=6, help="training seeds per weight (train.seed, train.seed + 1, ...)")
    a = ap.parse_args()
    params, schema, split, (train, valid, test) = load_study(a)
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import train_test_split
    from flex_ml.model import predict_scores
    from flex_ml.split import labels
    from flex_ml.teacher import soft_targets, teacher_scores
    from flex_ml.train import train_model

    tp, seed0 = params["train"], params["train"].get("seed", 42)
    half_a, half_b = train_test_split(valid, test_size=0.5, random_state=seed0, stratify=labels(valid, schema))
    yb, yt = labels(half_b, schema), labels(test, schema)
    t0 = time.perf_counter()
    teacher, about = teacher_scores(train, half_a, schema, params.get("baselines", {}).get("gbdt", {}),
                                    tp.get("teacher_folds", 5), seed0)
    out = {"split": str(split), "rows": {"train": len(train), "valid_half_a": len(half_a), "valid_half_b": len(half_b), "test": len(test)},
           "teacher": dict(about, seconds=round(time.perf_counter() - t0, 1)), "seeds": [seed0 + k for k in range(a.seeds)], "weights": {}}
    for w in [float(x) for x in a.weights.split(",")]:
        targets = None if w == 0 else soft_targets(labels(train, schema), teacher, w)
        runs = []
        for seed in out["seeds"]:
            t1 = time.perf_counter()
            with contextlib.redirect_stdout(sys.stderr):
                model, _, summary = train_model(train, half_a, schema, params["model"], epochs=tp.get("epochs", 30),
                                                batch_size=tp.get("batch_size", 512), patience=tp.get("patience", 5), seed=seed,
                                                class_weight=tp.get("class_weight", "none"), verbose=0, calibration="none", targets=targets)
            runs.append(dict(seed=seed, valid_half_b_auc=round(float(roc_auc_score(yb, predict_scores(model, half_b, schema))), 6),
                             test_auc=round(float(roc_auc_score(yt, predict_scores(model, test, schema))), 6),
                             best_epoch=summary["best_epoch"], seconds=round(time.perf_counter() - t1, 1)))
            print(f"weight {w:g} seed {seed}: half B {runs[-1]['valid_half_b_auc']:.4f}, test {runs[-1]['test_auc']:.4f}",
                  file=sys.stderr, flush=True)
        b = [r["valid_half_b_auc"] for r in runs]
        out["weights"][f"{w:g}"] = dict(valid_half_b_auc_mean=round(float(np.mean(b)), 6), valid_half_b_auc_sd=round(float(np.std(b, ddof=1)), 6),
                                        test_auc_mean=round(float(np.mean([r["test_auc"] for r in runs])), 6), runs=runs)
    labels_only = out["weights"].get("0")
    if labels_only:  # paired by seed: the same seeds train both, so the seed's own luck cancels
        for k, v in out["weights"].items():
            if k == "0": continue
            d = [r["valid_half_b_auc"] - r0["valid_half_b_auc"] for r, r0 in zip(v["runs"], labels_only["runs"])]
            v["gain_over_labels_half_b"] = dict(mean=round(float(np.mean(d)), 6), seeds_better=int(sum(x > 0 for x in d)), seeds=len(d))
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()

"""Training-speed study: the train stage's fit (rows encoded once, then the layers after the fixed
preprocessing trained on them) against fitting the whole model on raw rows, which runs the
preprocessing again at every step of every epoch. Prints one JSON object (about 2 minutes on 2 cores).

    .venv/bin/python benchmarks/training.py [--repeats 2] [--split-dir artifacts/split] [--params params.yaml]

Both ways train the model of params.yaml (`model` and `train` sections) on the pipeline's own split,
from the same seed, with the same early stopping, alternating so that a noisy machine slows both
alike. Each run reports the fit's wall time (encoding included), the epochs run, the best epoch's
validation AUC, and whether the two ways ended with the same weights, bit for bit (they must: the
preprocessing has no weights to learn, so only where it runs changes).
"""
import hashlib
import json
import re
import statistics
import time

import numpy as np

from _study import load_study, study_parser  # benchmarks/ is on the path when run as a script


def main():
    ap = study_parser(__doc__)
    ap.add_argument("--repeats", type=int, default=2, help="runs of each way, alternating")
    a = ap.parse_args()
    params, schema, split, (train, valid) = load_study(a, ("train", "valid"))
    import keras
    import tensorflow as tf
    from flex_ml.features import fit_feature_stats
    from flex_ml.model import EnsembleAUC, build_model, feature_encoder, tower_count, training_model
    from flex_ml.split import labels
    from flex_ml.train import make_dataset

    tp, mp = params["train"], dict(params["model"])
    bins = int(mp.pop("numeric_bins", 0))
    stats = fit_feature_stats(schema, train, bins=bins)

    def fit(encoded: bool) -> dict:
        keras.utils.set_random_seed(tp["seed"])
        tf.config.experimental.enable_op_determinism()
        model = build_model(schema, stats, prior=float(labels(train, schema).mean()), **mp)
        towers = tower_count(model)
        if encoded: trainer = training_model(model, mp.get("learning_rate", 1e-3))
        elif towers == 1: trainer = model  # the whole model on raw rows: what `fit` did before
        else:  # an ensemble's towers side by side, from the raw inputs
            outs = [l.output for l in model.layers if re.fullmatch(r"tower\d+_score", l.name)]
            trainer = keras.Model(model.input, keras.layers.Concatenate()(outs))
            trainer.compile(optimizer=model.optimizer, loss="binary_crossentropy", metrics=[EnsembleAUC(name="auc")])
        enc = feature_encoder(model) if encoded else None
        t0 = time.perf_counter()
        hist = trainer.fit(make_dataset(train, schema, tp["batch_size"], shuffle_seed=tp["seed"], label_columns=towers, encoder=enc),
                           validation_data=make_dataset(valid, schema, 4096, label_columns=towers, encoder=enc),
                           epochs=tp["epochs"], verbose=0, shuffle=False,
                           callbacks=[keras.callbacks.EarlyStopping(monitor="val_auc", mode="max", patience=tp["patience"],
                                                                    restore_best_weights=True)])
        seconds = time.perf_counter() - t0
        digest = hashlib.sha256(b"".join(np.asarray(w).tobytes() for w in model.get_weights())).hexdigest()[:16]
        aucs = hist.history["val_auc"]
        return dict(seconds=round(seconds, 2), epochs=len(aucs), best_val_auc=round(float(max(aucs)), 6), weights_sha256=digest)

    runs = {"encoded_once": [], "raw_every_step": []}
    for _ in range(a.repeats):
        runs["encoded_once"].append(fit(True))
        runs["raw_every_step"].append(fit(False))
    med = {k: statistics.median(r["seconds"] for r in v) for k, v in runs.items()}
    digests = {r["weights_sha256"] for v in runs.values() for r in v}
    print(json.dumps({"split": str(split), "rows": {"train": len(train), "valid": len(valid)}, "runs": runs,
                      "median_seconds": med, "speedup": round(med["raw_every_step"] / med["encoded_once"], 2),
                      "same_weights_bit_for_bit": len(digests) == 1}, indent=2))


if __name__ == "__main__":
    main()

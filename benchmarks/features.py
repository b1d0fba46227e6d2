"""Feature study: what each group of the contract's derived features adds to the Keras model, judged
on the validation split over several training seeds. Prints one JSON object (about 6 minutes on 2
cores with the default 3 seeds).

    .venv/bin/python benchmarks/features.py [--seeds 3] [--split-dir artifacts/split] [--params params.yaml]

The contract (schemas/credit_default.yaml) derives, inside the model, the monthly utilisation
(UTIL1-6: bill / limit) and the repayment behaviour over the six months: the share of each bill paid
the month after (REPAID1-5), the worst delay and the number of months delayed (MAX_DELAY,
DELAYED_MONTHS), the growth of the bill (BILL_GROWTH) and the mean and peak utilisation (UTIL_AVG,
UTIL_PEAK). This trains the model of params.yaml on the pipeline's own split with the contract as it
is, with the utilisation alone (the contract before the repayment features), and with the utilisation
plus each group alone; and, as a cost/benefit beside them, the full contract with three towers. The
design is chosen on valid (mean over the seeds, same rows for every variant, so the comparison is
paired); test is reported, never used for a choice. Seeds 1, 2, ... keep clear of the pipeline's own
`train.seed`.
"""
import dataclasses
import json
import statistics
import sys

import numpy as np

from _study import fit_seeds, load_study, study_parser  # benchmarks/ is on the path when run as a script

# the repayment-behaviour groups of the contract, by the names it gives them
GROUPS = {"repaid": ["REPAID1", "REPAID2", "REPAID3", "REPAID4", "REPAID5"],
          "delay": ["MAX_DELAY", "DELAYED_MONTHS"],
          "balance": ["BILL_GROWTH", "UTIL_AVG", "UTIL_PEAK"]}


def variants(schema, model_params: dict) -> dict:
    "`{name: (schema, model params)}`: the contract, the utilisation alone, plus each group, and three towers."
    ours = {n for g in GROUPS.values() for n in g}
    missing = ours - {d.name for d in schema.derived}
    if missing: sys.exit(f"the contract has no derived feature {sorted(missing)}: this study compares the credit contract's groups")
    keep = lambda names: dataclasses.replace(schema, derived=[d for d in schema.derived if d.name not in ours or d.name in names])
    out = {"contract": (schema, model_params), "utilisation_only": (keep(set()), model_params)}
    out |= {f"utilisation_plus_{g}": (keep(set(names)), model_params) for g, names in GROUPS.items()}
    out["contract_3_towers"] = (schema, {**model_params, "towers": 3})
    return out


def main():
    ap = study_parser(__doc__)
    ap.add_argument("--seeds", type=int, default=3, help="training seeds per variant")
    a = ap.parse_args()
    params, schema, split, (train, valid, test) = load_study(a)
    from sklearn.metrics import roc_auc_score
    from flex_ml.split import labels

    yt = labels(test, schema)
    tp = params["train"]
    out = {"split": str(split), "seeds": list(range(1, a.seeds + 1)), "variants": {}}
    from flex_ml.teacher import training_targets
    for name, (sch, mp) in variants(schema, dict(params["model"])).items():
        targets, _ = training_targets(train, valid, sch, params, verbose=False)  # the teacher sees the variant's features too
        rows, test_scores = fit_seeds(name, train, valid, test, sch, mp, tp, out["seeds"], targets)
        v = {k: [r[k] for r in rows] for k in ("valid_auc", "test_auc", "seconds")}
        out["variants"][name] = dict(
            derived=[d.name for d in sch.derived], towers=mp.get("towers", 1), runs=rows,
            valid_auc_mean=round(statistics.mean(v["valid_auc"]), 6),
            valid_auc_sd=round(statistics.stdev(v["valid_auc"]), 6) if len(rows) > 1 else 0.0,
            test_auc_mean=round(statistics.mean(v["test_auc"]), 6),
            test_auc_of_mean_score=round(float(roc_auc_score(yt, np.mean(test_scores, axis=0))), 6),
            seconds_mean=round(statistics.mean(v["seconds"]), 1))
    base = out["variants"]["utilisation_only"]
    out["valid_gain_over_utilisation_only"] = {n: round(r["valid_auc_mean"] - base["valid_auc_mean"], 6)
                                               for n, r in out["variants"].items() if n != "utilisation_only"}
    out["chosen_on_valid"] = max(out["variants"], key=lambda n: out["variants"][n]["valid_auc_mean"])
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()

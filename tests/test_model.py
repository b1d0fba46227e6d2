"""Model tier: a real Keras model trained on a slice of the real data behaves as a risk model should,
and its SavedModel export takes raw records and reproduces its scores."""
import numpy as np
import pytest

from flex_ml.data import read_raw
from flex_ml.bundle import check_parity, load_serving_function, to_raw_record
from flex_ml.export import export_saved_model, golden_examples
from flex_ml.features import to_model_inputs
from flex_ml.split import split_table
from flex_ml.train import train_model
from flex_ml.validate import validate_table


@pytest.fixture(scope="module")
def trained(credit_schema, credit_raw):
    acc = validate_table(read_raw(credit_raw, credit_schema), credit_schema).accepted
    s = split_table(acc.head(6000), credit_schema, seed=1)
    model, stats, summary = train_model(s["train"], s["valid"], credit_schema, {"hidden": [32, 16]},
                                        epochs=4, batch_size=512, seed=3, verbose=0)
    return model, stats, summary, s


def test_learns_signal(trained, credit_schema):
    from flex_ml.metrics import binary_metrics
    from flex_ml.model import predict_scores
    from flex_ml.split import labels
    model, _, summary, s = trained
    p = predict_scores(model, s["test"], credit_schema)
    assert binary_metrics(labels(s["test"], credit_schema), p, 0.5)["auc"] > 0.65  # chance is 0.5; the full-data figure is in the pipeline test
    assert summary["epochs_run"] <= 4


def test_more_delay_means_more_risk(trained, credit_schema):
    "Directional expectation: months of payment delay raise the default score."
    from flex_ml.model import predict_scores
    model, _, _, s = trained
    base = s["test"].head(300).copy()
    on_time, late = base.copy(), base.copy()
    on_time["PAY_0"], late["PAY_0"] = 0, 3
    up, base_scores = predict_scores(model, late, credit_schema), predict_scores(model, on_time, credit_schema)
    assert (up > base_scores).mean() > 0.8 and up.mean() > base_scores.mean() + 0.02


def test_missing_and_unknown_values_score(trained, credit_schema):
    from flex_ml.model import predict_scores
    model, *_ = trained
    rec = {c.name: None for c in credit_schema.features} | {"EDUCATION": "unheard-of"}
    p = predict_scores(model, [rec], credit_schema)
    assert np.isfinite(p).all() and 0 < p[0] < 1


@pytest.mark.slow
def test_training_is_reproducible(trained, credit_schema):
    from flex_ml.model import predict_scores
    model, _, _, s = trained
    again, _, _ = train_model(s["train"], s["valid"], credit_schema, {"hidden": [32, 16]}, epochs=4,
                              batch_size=512, seed=3, verbose=0)
    a, b = (predict_scores(m, s["test"].head(200), credit_schema) for m in (model, again))
    assert np.abs(a - b).max() < 1e-6


@pytest.mark.slow
def test_same_training_saves_the_same_bytes(trained, credit_schema, tmp_path):
    "A re-run of the train stage must not change model.keras's hash, or DVC re-runs everything after it."
    import hashlib
    import keras
    from flex_ml.model import save_model
    _, _, _, s = trained
    for name in ("a", "b"):
        # each stage run is a fresh process: reset Keras's name counters as a new process would have them
        keras.backend.clear_session()
        model, _, _ = train_model(s["train"], s["valid"], credit_schema, {"hidden": [32, 16]}, epochs=4,
                                  batch_size=512, seed=3, verbose=0)
        save_model(model, tmp_path / f"{name}.keras")
    assert hashlib.md5((tmp_path / "a.keras").read_bytes()).digest() == hashlib.md5((tmp_path / "b.keras").read_bytes()).digest()


def test_savedmodel_takes_raw_records_and_matches(trained, credit_schema, tmp_path):
    model, _, _, s = trained
    from flex_ml.schema import save_schema
    export_saved_model(model, credit_schema, tmp_path / "m")
    save_schema(credit_schema, tmp_path / "m" / "schema.yaml")  # the packed endpoint's column order
    golden = golden_examples(model, s["test"], credit_schema, n=10)
    for endpoint in ("serve", "serve_packed"):
        assert check_parity(load_serving_function(tmp_path / "m", endpoint), golden, credit_schema) <= 1e-6
    score = load_serving_function(tmp_path / "m")
    # a raw record as the source has it, categories given as JSON numbers
    rec = to_raw_record(s["test"].iloc[0].to_dict(), credit_schema)
    assert isinstance(rec["EDUCATION"], int)
    assert score(to_model_inputs([rec], credit_schema)).shape == (1,)
    names = {g["name"] for g in golden}
    assert "unknown EDUCATION" in names  # credit has no nullable feature: no "missing" golden record


@pytest.mark.slow
def test_binned_ensemble_exports_and_numpy_runtime_matches(trained, credit_schema, tmp_path):
    """Piecewise-linear bins and an ensemble of towers survive the whole path: trained side by side,
    the SavedModel and both NumPy evaluators (fused and layer by layer) give the same scores."""
    import keras
    from flex_ml.model import predict_scores, tower_count
    from flex_ml.runtime import NumpyModel, save_runtime
    _, _, _, s = trained
    model, stats, summary = train_model(s["train"], s["valid"], credit_schema,
                                        {"hidden": [16, 8], "numeric_bins": 8, "towers": 3},
                                        epochs=3, batch_size=512, seed=5, verbose=0)
    assert summary["towers"] == tower_count(model) == 3 and stats["LIMIT_BAL"]["bins"]
    towers = keras.Model(model.input, [model.get_layer(f"tower{k}_score").output for k in range(3)])
    from flex_ml.model import as_tensors
    per_tower = np.hstack([np.asarray(t) for t in towers(as_tensors(to_model_inputs(s["test"].head(300), credit_schema)))])
    assert np.abs(per_tower[:, 0] - per_tower[:, 1]).max() > 1e-3  # independent towers, not copies

    from flex_ml.schema import save_schema
    export_saved_model(model, credit_schema, tmp_path / "m")
    save_schema(credit_schema, tmp_path / "m" / "schema.yaml")
    golden = golden_examples(model, s["test"], credit_schema, n=10)
    assert check_parity(load_serving_function(tmp_path / "m"), golden, credit_schema) <= 1e-6
    assert save_runtime(model, tmp_path / "m") == []
    fused = NumpyModel(tmp_path / "m")
    assert fused.plan is not None  # the towers are fused into block matrices, not evaluated layer by layer
    slow = NumpyModel(tmp_path / "m"); slow.plan = None
    rows = s["test"].head(500)
    expected = predict_scores(model, rows, credit_schema)
    for m in (fused, slow):
        assert np.abs(m(to_model_inputs(rows, credit_schema)) - expected).max() < 1e-6
    assert check_parity(fused, golden, credit_schema) <= 1e-6


def test_numpy_runtime_follows_another_activation_or_says_it_cannot(trained, credit_schema, tmp_path):
    """A data scientist trying gelu in 04_model must still get an export: the NumPy runtime evaluates
    Keras's usual activations, and names one it cannot (the service then uses the SavedModel)."""
    import keras
    from flex_ml.model import predict_scores
    from flex_ml.runtime import NumpyModel, save_runtime
    from flex_ml.schema import FlexMLError
    model, _, _, s = trained
    def with_activation(act):
        def clone(layer):
            cfg = layer.get_config()
            if isinstance(layer, keras.layers.Dense) and cfg.get("activation") == "relu": cfg["activation"] = act
            return layer.__class__.from_config(cfg)
        m = keras.models.clone_model(model, clone_function=clone)
        m.set_weights(model.get_weights())
        return m
    rows = s["test"].head(300)
    for act in ("gelu", "tanh", "silu"):
        m = with_activation(act)
        assert save_runtime(m, tmp_path / act) == []
        np.testing.assert_allclose(NumpyModel(tmp_path / act)(to_model_inputs(rows, credit_schema)),
                                   predict_scores(m, rows, credit_schema), atol=1e-6)
    assert save_runtime(with_activation("mish"), tmp_path / "mish") == ["Dense activation 'mish'"]
    with pytest.raises(FlexMLError, match="Dense activation 'mish'"): NumpyModel(tmp_path / "mish")



def test_scores_are_recalibrated_on_valid_inside_the_network(trained, credit_schema):
    "Platt scaling is fitted on valid and folded into the output layer: the saved network itself is calibrated."
    from flex_ml.model import predict_scores
    from flex_ml.split import labels
    model, _, summary, s = trained
    cal = summary["calibration"]
    assert cal["method"] == "platt" and cal["a"] > 0 and cal["valid_log_loss_after"] <= cal["valid_log_loss_before"]
    p = predict_scores(model, s["valid"], credit_schema)
    assert abs(p.mean() - cal["valid_mean_score_after"]) < 1e-4  # what serving computes, not a side table
    assert abs(p.mean() - labels(s["valid"], credit_schema).mean()) < abs(cal["valid_mean_score_before"] - cal["valid_positive_rate"]) + 1e-3


@pytest.mark.slow
def test_derived_operations_agree_in_numpy_keras_savedmodel_and_runtime(trained, credit_schema, tmp_path):
    """Every derived operation of the contract (chained ones too) gives the same values in NumPy (the
    baselines' design matrix) and in the Keras layers, and a model using them exports with parity: the
    SavedModel and both NumPy evaluators reproduce its scores on raw records with missing values."""
    import keras
    from flex_ml.features import derive_all
    from flex_ml.model import as_tensors, predict_scores
    from flex_ml.runtime import NumpyModel, save_runtime
    from flex_ml.schema import Schema, save_schema
    pay = ["PAY_0", "PAY_2", "PAY_3", "PAY_4", "PAY_5", "PAY_6"]
    d = credit_schema.to_dict()
    d["derived"] = d["derived"] + [
        dict(name="MONTHS_LATE", count=pay, above=0), dict(name="WORST_DELAY", max=pay), dict(name="BEST", min=pay),
        dict(name="UTIL_MEAN", mean=[f"UTIL{i}" for i in range(1, 7)]), dict(name="UTIL_TREND", difference=["UTIL1", "UTIL6"]),
        dict(name="PAID", sum=[f"PAY_AMT{i}" for i in range(1, 7)], transform="signed_log1p"),
        dict(name="BILLED", sum=[f"BILL_AMT{i}" for i in range(1, 7)], transform="signed_log1p"),
        dict(name="PAID_SHARE", ratio=["PAID", "BILLED"], clip=[-1, 3])]
    schema = Schema.from_dict(d)
    _, _, _, s = trained
    rows = s["test"].head(400).copy()
    for i, col in enumerate(["PAY_0", "PAY_AMT1", "BILL_AMT6", "LIMIT_BAL"]):  # missing values on some rows
        rows[col] = rows[col].astype("Float64"); rows.iloc[i * 7: i * 7 + 5, rows.columns.get_loc(col)] = None
    rows.iloc[40:45, [rows.columns.get_loc(c) for c in pay]] = None  # every input of the PAY aggregates missing
    model, stats, _ = train_model(s["train"], s["valid"], schema, {"hidden": [16], "numeric_bins": 4},
                                  epochs=2, batch_size=512, seed=4, verbose=0)
    assert stats["PAID"]["transform"] == "signed_log1p" and stats["PAID"]["op"] == "sum" and stats["PAID_SHARE"]["ratio"] == ["PAID", "BILLED"]
    assert schema.derived[-1].formula == "PAID / BILLED clipped to [-1, 3]" and schema.derived[-3].formula.endswith(", then signed_log1p")
    x = to_model_inputs(rows, schema)
    expected = derive_all(x, schema)
    assert np.isnan(expected["MONTHS_LATE"][40:45]).all() and not np.isnan(expected["MONTHS_LATE"][:40]).any()
    names = [dd.name for dd in schema.derived]
    probe = keras.Model(model.input, [model.get_layer(f"{dd.op}_{dd.key}").output for dd in schema.derived])
    got = probe(as_tensors(x))
    for name, g in zip(names, got):
        np.testing.assert_allclose(np.asarray(g)[:, 0], expected[name], rtol=1e-6, atol=1e-6, err_msg=name)

    export_saved_model(model, schema, tmp_path / "m")
    save_schema(schema, tmp_path / "m" / "schema.yaml")
    golden = golden_examples(model, rows, schema, n=10)
    assert check_parity(load_serving_function(tmp_path / "m"), golden, schema) <= 1e-6
    assert save_runtime(model, tmp_path / "m") == []
    fused, slow = NumpyModel(tmp_path / "m"), NumpyModel(tmp_path / "m")
    slow.plan = None
    assert fused.plan is not None  # derived operations keep the vectorised evaluator
    scores = predict_scores(model, rows, schema)
    for m in (fused, slow):
        assert np.abs(m(to_model_inputs(rows, schema)) - scores).max() < 1e-6


@pytest.mark.slow
def test_tensorflow_numerics_do_not_depend_on_the_cpu():
    """flex_ml turns TensorFlow's oneDNN kernels off before TensorFlow loads: they are picked by CPU type
    and sum in another order, so the same seed would train another model on another machine. TensorFlow
    logs a line when they are on; a user's own setting is kept."""
    import os, subprocess, sys
    code = "import os, flex_ml.model, tensorflow; print(os.environ['TF_ENABLE_ONEDNN_OPTS'])"
    env = {k: v for k, v in os.environ.items() if k not in ("TF_ENABLE_ONEDNN_OPTS", "TF_CPP_MIN_LOG_LEVEL")}
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["0"] and "oneDNN custom operations are on" not in r.stderr
    kept = subprocess.run([sys.executable, "-c", code], env=dict(env, TF_ENABLE_ONEDNN_OPTS="1"), capture_output=True, text=True, timeout=120)
    assert kept.stdout.split() == ["1"]
    # TensorFlow loaded first: too late to choose, and the user is told so
    late = subprocess.run([sys.executable, "-c", "import tensorflow, flex_ml.schema"], env=env, capture_output=True, text=True, timeout=120)
    assert late.returncode == 0 and "TensorFlow was loaded before flex_ml" in late.stderr


@pytest.mark.slow
def test_teacher_targets_hold_no_memory_of_their_rows_and_train_a_model(credit_schema, credit_raw):
    """The teacher's score for a train row comes from a GBDT that never saw the row (out of fold): it ranks
    train about as well as valid, far below a GBDT scoring its own training rows. A network trained on the
    soft targets learns the signal, and its training curves count the labels behind them."""
    from sklearn.metrics import roc_auc_score
    from flex_ml.baselines import fit_baselines
    from flex_ml.features import fit_feature_stats
    from flex_ml.model import predict_scores
    from flex_ml.split import labels
    from flex_ml.teacher import training_targets
    acc = validate_table(read_raw(credit_raw, credit_schema), credit_schema).accepted
    s = split_table(acc.head(9000), credit_schema, seed=2)
    params = {"train": {"teacher_weight": 0.5, "teacher_folds": 4, "seed": 0}, "baselines": {"gbdt": {"max_iter": 200}}}
    targets, about = training_targets(s["train"], s["valid"], credit_schema, params, verbose=False)
    y = labels(s["train"], credit_schema)
    assert about["model"] == "gbdt" and about["folds"] == 4 and ((targets > 0.5) == (y == 1)).all()
    gbdt = fit_baselines(s["train"], s["valid"], credit_schema, fit_feature_stats(credit_schema, s["train"]),
                         {"gbdt": {"max_iter": 200}, "seed": 0})["baseline_gbdt"]
    in_sample = roc_auc_score(y, gbdt.predict_proba(s["train"])[:, 1])
    on_valid = roc_auc_score(labels(s["valid"], credit_schema), gbdt.predict_proba(s["valid"])[:, 1])
    assert abs(about["out_of_fold_auc"] - on_valid) < 0.03 and about["out_of_fold_auc"] < in_sample - 0.02, (about, on_valid, in_sample)
    model, _, summary = train_model(s["train"], s["valid"], credit_schema, {"hidden": [32, 16]}, epochs=4,
                                    batch_size=512, seed=3, verbose=0, targets=targets)
    assert summary["targets"] == "soft" and 0.65 < summary["best_val_auc"] <= 1
    assert roc_auc_score(labels(s["test"], credit_schema), predict_scores(model, s["test"], credit_schema)) > 0.65

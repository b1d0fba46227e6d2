"""Multi-worker training (train.distribute: multi_worker): real TensorFlow workers on loopback, started by
`flex-ml train --workers N`; the errors a cluster that is not whole gives, within their bound."""
import json
import os
import subprocess
import time

import numpy as np
import pytest
import yaml

from conftest import BIN, ROOT, TINY, _free_port, run

# real TensorFlow training runs (minutes on two cores): the slow tier
pytestmark = pytest.mark.slow

# a small real model: the fast tier's settings (few epochs, no teacher), and a narrow network
SMALL = {**TINY, "model": {"hidden": [16]}}


def small_params(path, **train) -> dict:
    "params.yaml with SMALL's values (and `train`'s) laid over it, written to `path`; the params as a dict."
    p = yaml.safe_load((ROOT / "params.yaml").read_text())
    for section, values in {**SMALL, "train": {**SMALL["train"], **train}}.items():
        for k, v in values.items():
            p[section][k] = {**p[section][k], **v} if isinstance(v, dict) else v
    p["dataset"] = {k: str(ROOT / v) for k, v in p["dataset"].items()}
    path.write_text(yaml.safe_dump(p))
    return p


@pytest.fixture(scope="module")
def split_dir(tmp_path_factory, credit_raw):
    "The credit data validated and split by the stage functions, as `dvc repro` lays them out."
    from flex_ml.params import load_params
    from flex_ml.split import run_split
    from flex_ml.validate import run_validate
    p, a = load_params(ROOT / "params.yaml"), tmp_path_factory.mktemp("dist")
    schema = ROOT / p["dataset"]["schema"]
    run_validate(credit_raw, schema, a / "validate", **p["validate"])
    run_split(a / "validate" / "accepted.parquet", schema, a / "split", **p["split"])
    return a


def flex_ml(args, cwd, env=None, timeout=600):
    return run([str(BIN / "flex-ml"), *args], cwd, check=False, env=env, timeout=timeout)


def test_multi_worker_without_tf_config_is_an_error(split_dir, tmp_path):
    "No silent single-worker fallback: multi_worker with no cluster, or a cluster of one, stops with what to do."
    small_params(tmp_path / "params.yaml", distribute="multi_worker")
    args = ["train", "--split-dir", str(split_dir / "split"), "--out", str(tmp_path / "train"), "--params", str(tmp_path / "params.yaml")]
    unset = {k: v for k, v in os.environ.items() if k not in ("TF_CONFIG", "FLEX_ML_ALLOW_SINGLE_WORKER")}
    r = subprocess.run([str(BIN / "flex-ml"), *args], cwd=tmp_path, env=unset, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "TF_CONFIG: not set, but train.distribute is multi_worker" in r.stderr, r.stderr
    assert "hint: set TF_CONFIG" in r.stderr and "Traceback" not in r.stderr and not (tmp_path / "train").exists()
    one = json.dumps({"cluster": {"worker": [f"127.0.0.1:{_free_port()}"]}, "task": {"type": "worker", "index": 0}})
    r = flex_ml(args, tmp_path, env={"TF_CONFIG": one}, timeout=120)
    assert r.returncode == 2 and "TF_CONFIG names one worker" in r.stderr and "FLEX_ML_ALLOW_SINGLE_WORKER=1" in r.stderr, r.stderr


def test_a_worker_whose_peer_is_absent_fails_within_its_bound(split_dir, tmp_path):
    "Worker 1 of 2 with no worker 0 gives up after train.worker_timeout_s, naming the address it could not reach."
    small_params(tmp_path / "params.yaml", distribute="multi_worker", worker_timeout_s=5)
    absent, mine = f"127.0.0.1:{_free_port()}", f"127.0.0.1:{_free_port()}"
    cfg = json.dumps({"cluster": {"worker": [absent, mine]}, "task": {"type": "worker", "index": 1}})
    t0 = time.monotonic()
    r = flex_ml(["train", "--split-dir", str(split_dir / "split"), "--out", str(tmp_path / "train"),
                 "--params", str(tmp_path / "params.yaml")], tmp_path, env={"TF_CONFIG": cfg}, timeout=120)
    took = time.monotonic() - t0
    assert r.returncode == 2, r.stderr[-2000:]
    assert f"worker 1 ({mine}) could not reach worker 0 at {absent} within 5 s" in r.stderr, r.stderr[-2000:]
    assert "Traceback" not in r.stderr and took < 60, took  # the 5 s bound, plus the interpreter's start


def test_two_workers_on_loopback_train_one_model(split_dir, tmp_path):
    """The fast tier's multi-worker check: `flex-ml train --workers 2` runs two real TensorFlow workers that
    train in step (the same figures each epoch); only the chief writes the outputs; each line says its worker."""
    small_params(tmp_path / "params.yaml", epochs=1)
    out = tmp_path / "train"
    r = flex_ml(["train", "--workers", "2", "--timeout", "300", "--split-dir", str(split_dir / "split"), "--out", str(out),
                 "--params", str(tmp_path / "params.yaml")], tmp_path, timeout=400)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    lines = r.stdout.splitlines()
    for i in (0, 1):
        assert any(l.startswith(f"[worker {i}] worker {i} of 2") for l in lines), lines[:20]
        epochs = [l.split(" - ", 3)[-1] for l in lines if l.startswith(f"[worker {i}] ") and " - val_auc: " in l]
        assert len(epochs) == 1, epochs
    same = [l.split("val_auc: ")[1] for l in lines if " - val_auc: " in l]
    assert len(set(same)) == 1, same  # both workers report the all-reduced figures
    summary = json.loads((out / "summary.json").read_text())
    assert summary["workers"] == 2 and summary["epochs_run"] == 1 and (out / "model.keras").exists()
    assert "2 worker(s) done" in r.stdout


@pytest.mark.heavy
def test_two_workers_match_one_and_the_export_passes_parity(split_dir, tmp_path, credit_raw):
    """Two workers train the credit model with `multi_worker`; the chief's export passes the golden-example parity
    check, and its test AUC is within 0.01 of one process trained with the same params (about 2-3 minutes)."""
    import keras
    from sklearn.metrics import roc_auc_score
    from flex_ml.evaluate import run_evaluate
    from flex_ml.export import run_export
    from flex_ml.model import predict_scores
    from flex_ml.params import load_params
    from flex_ml.schema import load_schema
    from flex_ml.split import labels
    from flex_ml.train import run_train
    import pandas as pd
    p = small_params(tmp_path / "params.yaml")
    r = flex_ml(["train", "--workers", "2", "--timeout", "500", "--split-dir", str(split_dir / "split"),
                 "--out", str(tmp_path / "multi"), "--params", str(tmp_path / "params.yaml")], tmp_path, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    p = load_params(tmp_path / "params.yaml")
    schema = load_schema(p["dataset"]["schema"])
    run_train(split_dir / "split", schema, tmp_path / "single", {k: p[k] for k in ("train", "model", "baselines")})
    test = pd.read_parquet(split_dir / "split" / "test.parquet")
    auc = {name: roc_auc_score(labels(test, schema), predict_scores(keras.models.load_model(tmp_path / name / "model.keras"), test, schema))
           for name in ("multi", "single")}
    print("test AUC", auc)
    assert abs(auc["multi"] - auc["single"]) <= 0.01, auc
    run_evaluate(split_dir / "split", tmp_path / "multi", schema, tmp_path / "evaluate", {k: p[k] for k in ("evaluate", "baselines")})
    meta = run_export(tmp_path / "multi", tmp_path / "evaluate", split_dir / "validate", split_dir / "split",
                      p["dataset"]["schema"], credit_raw, tmp_path / "model", p)
    assert meta["parity_max_gap"] <= p["export"]["parity_tolerance"], meta["parity_max_gap"]

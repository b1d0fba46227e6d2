"""Training at scale: the streamed input (Parquet shards through tf.data) on generated credit rows, against the
in-memory path on the same split; a training run killed with SIGKILL that resumes after its last finished epoch;
and (heavy) a million-row split trained with bounded memory."""
import json
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import yaml

from conftest import ROOT

# real TensorFlow training runs (minutes on two cores): the slow tier
pytestmark = pytest.mark.slow

GENERATED = ROOT / "schemas" / "credit_default_generated.yaml"
CLI = [sys.executable, "-m", "flex_ml.cli"]
EPOCHS = 4
# the CLI in this process, then its own peak resident memory (the process's, not its children's)
PEAK = ("import resource, sys\nfrom flex_ml.cli import app\ntry: app(sys.argv[1:])\nexcept SystemExit as e:\n    if e.code: raise\n"
        "print('peak_rss_mb', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)")


def write_params(path, raw, **train) -> dict:
    "params.yaml for generated rows: streaming data stages, a small network, a teacher fitted on a 20,000-row sample."
    p = yaml.safe_load((ROOT / "params.yaml").read_text())
    p["dataset"] = {"schema": str(GENERATED), "raw": str(raw)}
    p["engine"].update(in_memory_max_mb=0, chunk_rows=50_000)
    p["model"].update(hidden=[32, 16])
    p["train"].update({**dict(epochs=EPOCHS, patience=EPOCHS, batch_size=1024, teacher_weight=0.3, teacher_folds=3), **train})
    p["baselines"]["max_rows"] = 20_000
    p["baselines"]["gbdt"].update(max_iter=60, patience=20)
    path.write_text(yaml.safe_dump(p))
    return p


def cli(args, cwd, timeout=900):
    r = subprocess.run(CLI + args, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"{args} exited {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


def prepare(d, credit_raw, rows, seed):
    "Generated rows, validated and split by the streaming engine into shards, as `dvc repro` would on them."
    from flex_ml.generate import generate
    generate(rows, d / "g", GENERATED, credit_raw, seed=seed, chunk_rows=100_000, log=lambda m: None)
    cli(["validate", "--params", "params.yaml", "--out", "v"], d)
    cli(["split", "--params", "params.yaml", "--input", "v/accepted.parquet", "--out", "s"], d)
    assert (d / "s" / "train.parquet").is_dir()  # shards: what the streamed input reads


@pytest.fixture(scope="module")
def shards(tmp_path_factory, credit_raw):
    d = tmp_path_factory.mktemp("stream")
    write_params(d / "params.yaml", d / "g" / "data.csv", input="stream")
    prepare(d, credit_raw, 100_000, seed=21)
    return d


def auc_on_test(model_dir, split_dir):
    "The model's AUC on the test shards, scored from raw records as the export and the service score them."
    import keras
    from sklearn.metrics import roc_auc_score
    import flex_ml.model
    from flex_ml.schema import load_schema
    from flex_ml.split import labels
    schema = load_schema(GENERATED)
    test = pd.read_parquet(split_dir / "test.parquet")
    model = keras.models.load_model(model_dir / "model.keras")
    return roc_auc_score(labels(test, schema), flex_ml.model.predict_scores(model, test, schema))


def test_streamed_training_matches_the_in_memory_path(shards):
    "The same split through both inputs: the streamed one reads shards in blocks and ends within 0.01 test AUC."
    r = cli(["train", "--split-dir", "s", "--out", "t_stream", "--params", "params.yaml"], shards)
    summary = json.loads((shards / "t_stream" / "summary.json").read_text())
    n_train = sum(len(pd.read_parquet(f)) for f in (shards / "s" / "train.parquet").glob("*.parquet"))
    assert summary["input"]["kind"] == "stream" and summary["n_train"] == n_train and summary["epochs_run"] == EPOCHS
    assert summary["input"]["blocks"] >= 2 and summary["teacher"]["sample_rows"] == 20_000, summary
    assert "rows into" in r.stdout and "on a sample of 20,000 rows" in r.stdout
    assert not (shards / "t_stream" / ".backup" / "worker-0").exists()  # finished: no backup left
    write_params(shards / "memory.yaml", shards / "g" / "data.csv", input="memory")
    cli(["train", "--split-dir", "s", "--out", "t_memory", "--params", "memory.yaml"], shards)
    assert "input" not in json.loads((shards / "t_memory" / "summary.json").read_text())
    streamed, in_memory = (auc_on_test(shards / t, shards / "s") for t in ("t_stream", "t_memory"))
    assert streamed > 0.70 and abs(streamed - in_memory) < 0.01, (streamed, in_memory)


def finished_epochs(backup):
    meta = backup / "keras" / "training_metadata.json"
    try: return json.loads(meta.read_text())["epoch"]
    except (OSError, ValueError, KeyError): return 0  # not written yet, or being written


def test_a_killed_run_resumes_after_its_last_epoch(shards):
    "SIGKILL after the second epoch; the same command again resumes (no epoch 1, no re-encoding) and finishes them all."
    args = ["train", "--split-dir", "s", "--out", "t_kill", "--params", "params.yaml"]
    backup = shards / "t_kill" / ".backup" / "worker-0"
    proc = subprocess.Popen(CLI + args, cwd=shards, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    while finished_epochs(backup) < 2 and proc.poll() is None and time.monotonic() < deadline: time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    done = finished_epochs(backup)
    assert 2 <= done < EPOCHS, f"killed after {done} epochs (exit {proc.returncode})"
    assert not (shards / "t_kill" / "model.keras").exists()
    r = cli(args, shards)
    log = r.stdout + r.stderr
    assert f"resuming training after epoch {done}" in log and f"Epoch 1/{EPOCHS}" not in log and f"Epoch {done + 1}/{EPOCHS}" in log, log[-3000:]
    # the blocks the killed run wrote are read again, not rebuilt, and their teacher's targets are not fitted again
    assert "rows into" not in r.stdout and "no teacher fit" in r.stdout, r.stdout[-3000:]
    summary = json.loads((shards / "t_kill" / "summary.json").read_text())
    assert summary["epochs_run"] == EPOCHS and not backup.exists()
    curve = (shards / "t_kill" / "live" / "plots" / "metrics" / "eval" / "auc.tsv").read_text().splitlines()
    assert len(curve) == 1 + EPOCHS  # the whole curve, the killed run's epochs included
    # the same run uninterrupted (the first test): the same epochs in the same order; dropout's draws differ
    uninterrupted = json.loads((shards / "t_stream" / "summary.json").read_text())
    assert abs(summary["best_val_auc"] - uninterrupted["best_val_auc"]) < 0.01, (summary, uninterrupted)
    assert abs(auc_on_test(shards / "t_kill", shards / "s") - auc_on_test(shards / "t_stream", shards / "s")) < 0.01


def test_a_changed_run_does_not_resume_another_runs_backup(shards):
    "A backup made under other parameters is discarded, with a message, not resumed."
    backup = shards / "t_other" / ".backup" / "worker-0"
    (backup / "keras").mkdir(parents=True)
    (backup / "run.json").write_text(json.dumps({"run": "another run"}))
    (backup / "keras" / "training_metadata.json").write_text(json.dumps({"epoch": 3, "batch": -1}))
    write_params(shards / "one.yaml", shards / "g" / "data.csv", input="stream", epochs=1, teacher_weight=0.0)
    r = cli(["train", "--split-dir", "s", "--out", "t_other", "--params", "one.yaml"], shards)
    assert "discarding the training backup" in r.stdout and "resuming" not in r.stdout
    assert json.loads((shards / "t_other" / "summary.json").read_text())["epochs_run"] == 1


@pytest.mark.slow
@pytest.mark.heavy
def test_a_million_rows_train_in_bounded_memory(tmp_path, credit_raw):
    "1M generated rows: validate, split and one streamed epoch; the train process's peak RSS stays under 3 GB."
    write_params(tmp_path / "params.yaml", tmp_path / "g" / "data.csv", input="auto", in_memory_max_rows=100_000, epochs=1)
    prepare(tmp_path, credit_raw, 1_000_000, seed=5)
    r = subprocess.run([sys.executable, "-c", PEAK, "train", "--split-dir", "s", "--out", "t", "--params", "params.yaml"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=3000)
    assert r.returncode == 0, r.stderr[-3000:]
    peak_mb = float(r.stdout.rsplit("peak_rss_mb", 1)[1])
    summary = json.loads((tmp_path / "t" / "summary.json").read_text())
    assert summary["input"]["kind"] == "stream" and summary["n_train"] > 500_000
    assert peak_mb < 3072, f"train peaked at {peak_mb:.0f} MB"
    assert auc_on_test(tmp_path / "t", tmp_path / "s") > 0.70

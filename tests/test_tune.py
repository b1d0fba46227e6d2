"""flex-ml tune on the real split: trials beside the baseline, the test split never read, results a
person can read, and --apply that only writes a gain beyond the seed noise into params.yaml."""
import json
import shutil

import pytest
import yaml

from conftest import run

pytestmark = pytest.mark.slow


def _small(p, tmp_path, **tune):
    "params.yaml of the project, made quick (a few epochs), with the given tune section."
    params = yaml.safe_load((p / "params.yaml").read_text())
    params["train"].update(epochs=3, patience=1, teacher_weight=0.0)  # the search is under test, not the teacher (tests/test_model.py)
    params["model"].update(hidden=[16])
    params["tune"] = tune
    f = tmp_path / "params.yaml"
    f.write_text("# the team's comment stays\n" + yaml.safe_dump(params, sort_keys=False))
    return f


def test_tune_compares_trials_with_the_baseline_on_valid_only(tiny_project, tmp_path):
    p = tiny_project
    split = tmp_path / "split"; split.mkdir()
    for n in ("train", "valid"): shutil.copy(p / "artifacts/split" / f"{n}.parquet", split)  # no test.parquet
    # halving 3: after the first seed, params.yaml and the best third of the other 3 trials train on
    f = _small(p, tmp_path, trials=3, seeds=2, halving=3, seed=0, space={"model.dropout": [0.1, 0.3], "model.hidden": [[16], [32, 16]]})
    r = run(["flex-ml", "tune", "--params", f, "--split-dir", split, "--out", tmp_path / "tune"], p)
    res = json.loads((tmp_path / "tune/tune.json").read_text())
    trials = res["trials"]
    assert len(trials) == 4 and trials[0]["overrides"] == {} and trials[0]["label"] == "params.yaml"
    assert all(0.65 < t["valid_auc"] < 0.85 and not t["failed"] for t in trials)
    assert len({json.dumps(t["overrides"], sort_keys=True) for t in trials}) == 4 and all(t["overrides"] for t in trials[1:])
    raced, dropped = [t for t in trials if not t["dropped_after"]], [t for t in trials if t["dropped_after"]]
    assert trials[0] in raced and all(len(t["valid_auc_by_seed"]) == 2 and t["seeds"] == [42, 43] for t in raced)
    assert all(t["dropped_after"] == 1 and t["seeds"] == [42] for t in dropped)
    for t in dropped:  # successive halving (tune.halving 3): below the best third of the trials before it, after one seed
        before = [u["valid_auc_by_seed"][0] for u in trials[:t["trial"]]]
        assert t["valid_auc_by_seed"][0] < max(before)
    assert res["best"] in raced and res["fits"] == 2 * len(raced) + len(dropped)
    assert res["seed_noise_sd"] > 0 and (res["verdict"] is None or res["verdict"]["standard_error"] > 0)
    assert res["n_valid"] == 6000 and f"tune: 4 trials x 2 seed(s)" in r.stdout
    assert (f"{len(dropped)} dropped after fewer seeds (tune.halving 3), {res['fits']} fits" in r.stdout) == bool(dropped)
    assert (tmp_path / "tune/tune.png").stat().st_size > 10_000 and (tmp_path / "tune/study.journal").stat().st_size > 0
    csv = (tmp_path / "tune/trials.csv").read_text().splitlines()
    assert len(csv) == 5 and "dropped_after_seeds" in csv[0]
    assert ("nothing to adopt" in r.stdout) == (res["best"]["trial"] == 0)
    if res["best"]["trial"]:  # the verdict is the confirmation's, on seeds the search did not use
        c = res["confirmation"]
        assert "dvc exp run -S" in r.stdout and "confirmed on fresh seeds" in r.stdout
        assert c["seeds"] == [44, 45] and c["rows_se"] > 0 and res["verdict"] == c["verdict"]


def test_apply_writes_only_a_gain_beyond_the_noise(tiny_project, tmp_path):
    p = tiny_project
    # a baseline that cannot learn in 3 epochs (learning rate 1e-6) against ones that can
    f = _small(p, tmp_path, trials=2, seeds=2, seed=0, space={"model.learning_rate": [0.003, 0.01], "model.l2": [1e-05]})
    params = yaml.safe_load(f.read_text()); params["model"]["learning_rate"] = 1e-6
    f.write_text("# the team's comment stays\n" + yaml.safe_dump(params, sort_keys=False))
    r = run(["flex-ml", "tune", "--params", f, "--out", tmp_path / "tune", "--apply"], p)
    res = json.loads((tmp_path / "tune/tune.json").read_text())
    assert res["best"]["trial"] != 0 and res["verdict"]["beyond_noise"], r.stdout
    after = f.read_text()
    assert after.startswith("# the team's comment stays") and f"--apply: wrote {res['best']['label']}" in r.stdout
    from flex_ml.params import load_params
    applied = load_params(f)["model"]  # as the stages and DVC read it: `l2: 1e-05` is a number
    assert applied["learning_rate"] == res["best"]["overrides"]["model.learning_rate"] and applied["l2"] == 1e-05
    assert run(["flex-ml", "params", "check", f], p).returncode == 0
    # one seed: the noise is unknown, so --apply leaves the file alone and says why
    before = f.read_text()
    r = run(["flex-ml", "tune", "--params", f, "--out", tmp_path / "tune1", "--apply", "--seeds", "1", "--trials", "1"], p)
    assert f.read_text() == before and ("unknown noise" in r.stdout or "it is the best trial" in r.stdout), r.stdout


def test_an_interrupted_search_keeps_the_trials_it_finished(tiny_project, tmp_path):
    import os, signal, subprocess, sys, time
    from conftest import BIN, mirror_dir
    p = tiny_project
    f = _small(p, tmp_path, trials=3, seeds=1, seed=0, space={"model.dropout": [0.0, 0.1, 0.2]})
    env = dict(os.environ, PATH=f"{BIN}:{os.environ['PATH']}", FLEX_ML_DATA_MIRROR=str(mirror_dir()))
    # as from a terminal: a test run in the background (CI) inherits SIGINT ignored, and Python then
    # never raises KeyboardInterrupt; the child gets the default disposition back
    proc = subprocess.Popen(["flex-ml", "tune", "--params", str(f), "--out", str(tmp_path / "tune")], cwd=p, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 300
    while not (tmp_path / "tune/tune.json").exists() and time.time() < deadline and proc.poll() is None: time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, (out, err[-2000:])
    res = json.loads((tmp_path / "tune/tune.json").read_text())
    assert len(res["trials"]) >= 1 and res["trials"][0]["valid_auc"] > 0.6 and "Traceback" not in err
    assert "interrupted after" in err or "aborted" in err
    assert (tmp_path / "tune/trials.csv").exists()
    # started again: the search resumes from its Optuna journal, and what was fitted is not fitted again
    done = sum(len(t["seeds"]) for t in res["trials"])
    r = run(["flex-ml", "tune", "--params", str(f), "--out", str(tmp_path / "tune")], p)
    assert "resuming the search stored in" in r.stdout, r.stdout
    again = json.loads((tmp_path / "tune/tune.json").read_text())
    assert len(again["trials"]) == 4 and not again["interrupted"]
    for old, new in zip(res["trials"], again["trials"]):  # the fits before the interrupt are kept as they were
        assert new["valid_auc_by_seed"][:len(old["valid_auc_by_seed"])] == old["valid_auc_by_seed"] and new["label"] == old["label"]
    assert sum(len(t["seeds"]) for t in again["trials"]) == 4 and done >= 1

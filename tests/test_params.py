"""params.yaml is user input: every mistake stops the verb with one message naming key, value and rule."""
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from flex_ml.params import PARAMS_CONTRACT, check_params, params_problems
from flex_ml.schema import FlexMLError

ROOT = Path(__file__).resolve().parents[1]
FLEX_ML = str(Path(sys.executable).parent / "flex-ml")


@pytest.mark.parametrize("path", ["params.yaml", "configs/bank_marketing/params.yaml"])
def test_project_parameter_files_follow_the_contract(path):
    assert params_problems(yaml.safe_load((ROOT / path).read_text())) == []


def test_every_key_of_params_yaml_has_a_rule():
    "A key added to params.yaml without a rule would be rejected as unknown: the contract covers the file."
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    def keys(d, c, prefix=""):
        for k, v in d.items():
            assert k in c, f"{prefix}{k} has no rule in PARAMS_CONTRACT"
            if isinstance(c[k], dict): keys(v, c[k], f"{prefix}{k}.")
    keys(params, PARAMS_CONTRACT)


def base():
    return {"dataset": {"schema": "schemas/credit_default.yaml", "raw": "data/x.csv"}}


@pytest.mark.parametrize("section,key,value,expected", [
    ("train", "epochs", "ten", "train.epochs = 'ten': must be an integer >= 1"),
    ("train", "epochs", 0, "train.epochs = 0: must be an integer >= 1"),
    ("train", "epochs", True, "train.epochs = True: must be an integer >= 1"),
    ("model", "dropout", 1.5, "model.dropout = 1.5: must be a number in [0, 1)"),
    ("model", "hidden", 64, "model.hidden = 64: must be a list of integers >= 1"),
    ("model", "learning_rate", 0, "model.learning_rate = 0: must be a number > 0"),
    ("train", "class_weight", "auto", "train.class_weight = 'auto': must be one of none, balanced"),
    ("split", "strategy", "kfold", "split.strategy = 'kfold': must be one of auto, stratified, time, random"),
    ("monitor", "window", "fortnight", "monitor.window = 'fortnight': must be day, week, month or rows:N"),
    ("monitor", "webhook", "slack", "monitor.webhook = 'slack': must be empty, or an http(s):// URL"),
    ("train", "epoch", 3, "train.epoch: unknown key (did you mean 'epochs'?)"),
])
def test_each_mistake_names_key_value_and_rule(section, key, value, expected):
    p = base(); p[section] = {key: value}
    problems = params_problems(p)
    assert len(problems) == 1 and problems[0].startswith(expected), problems


def test_nested_sections_cross_rules_and_required_keys():
    p = {"dataset": {"schema": "s.yaml"}, "baselines": {"gbdt": {"max_leaf_nodes": 1}},
         "split": {"valid_fraction": 0.6, "test_fraction": 0.4}, "monitor": {"psi_warn": 0.3, "psi_alert": 0.2}}
    problems = params_problems(p)
    assert "baselines.gbdt.max_leaf_nodes = 1: must be an integer >= 2" in problems
    assert "dataset.raw: required, and missing" in problems
    assert any(l.startswith("split.valid_fraction + split.test_fraction = 1") for l in problems)
    assert any(l.startswith("monitor.psi_warn = 0.3 is above monitor.psi_alert = 0.2") for l in problems)
    assert len(problems) == 4


def test_a_teams_own_section_is_allowed_but_a_misspelt_one_is_not():
    p = base(); p["my_stage"] = {"anything": 1}
    assert params_problems(p) == []
    p = base(); p["trian"] = {"epochs": 3}
    assert params_problems(p) == ["trian: unknown section (did you mean 'train'?)"]


def test_all_problems_come_in_one_error():
    p = base(); p["train"] = {"epochs": "ten", "patience": -1}
    with pytest.raises(FlexMLError) as e: check_params(p, "exp.yaml")
    assert "exp.yaml has 2 problems" in e.value.what and "train.patience = -1" in e.value.what
    assert "dvc exp run -S" in e.value.hint


def test_cli_stops_on_bad_params_with_a_message_not_a_traceback(tmp_path):
    "What `dvc exp run -S train.epochs=ten` leads to: the train stage exits 2 before touching TensorFlow."
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["train"]["epochs"] = "ten"; params["model"]["dropout"] = 1.5
    f = tmp_path / "params.yaml"; f.write_text(yaml.safe_dump(params))
    r = subprocess.run([FLEX_ML, "train", "--params", str(f), "--out", str(tmp_path / "train")], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert "has 2 problems" in r.stderr and "train.epochs = 'ten'" in r.stderr and "model.dropout = 1.5" in r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "train").exists()
    ok = subprocess.run([FLEX_ML, "params", "check"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and "params.yaml: ok" in ok.stdout
    bad = subprocess.run([FLEX_ML, "params", "check", str(f)], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "train.epochs = 'ten'" in bad.stderr


def test_a_tuning_space_is_checked_against_the_keys_own_rules(tmp_path):
    "`tune.space` can only name model/train keys, and every value to try must pass that key's rule."
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["tune"]["space"] = {"model.dropuot": [0.1], "model.dropout": [0.1, 1.5], "evaluate.seed": [1], "train.epochs": 5}
    f = tmp_path / "params.yaml"; f.write_text(yaml.safe_dump(params))
    r = subprocess.run([FLEX_ML, "params", "check", str(f)], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "has 4 problems" in r.stderr, r.stderr
    for line in ("tune.space.model.dropuot: not a tunable key (did you mean 'model.dropout'?)",
                 "tune.space.model.dropout[1] = 1.5: must be a number in [0, 1)",
                 "tune.space.evaluate.seed: not a tunable key",
                 "tune.space.train.epochs = 5: must be a non-empty list of values to try"):
        assert line in r.stderr, r.stderr
    # the command's own overrides are checked too, and a missing split is named with the verb that writes it
    r = subprocess.run([FLEX_ML, "tune", "--seeds", "0"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "tune.seeds = 0: must be an integer in [1, 20]" in r.stderr, r.stderr
    r = subprocess.run([FLEX_ML, "tune", "--split-dir", str(tmp_path / "nowhere")], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "written by `flex-ml split`" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert "`dvc repro split`" in r.stderr, r.stderr  # tune is not a stage: the hint names the one that writes its input
    del params["tune"]; f.write_text(yaml.safe_dump(params))
    r = subprocess.run([FLEX_ML, "tune", "--params", str(f)], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "no tune.space" in r.stderr, r.stderr


def test_every_params_file_has_what_every_stage_reads():
    """dvc.yaml names the params.yaml sections each stage reads; a dataset's own params file that lacks one
    (the bank-marketing file lacked `engine` once the engines landed) makes `dvc repro` fail at once."""
    import yaml
    from conftest import ROOT
    needed = {s for st in yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"].values() for s in st.get("params", [])}
    for f in [ROOT / "params.yaml", *sorted((ROOT / "configs").glob("*/params.yaml"))]:
        have = set(yaml.safe_load(f.read_text()))
        assert {n.split(".")[0] for n in needed} <= have, f"{f.relative_to(ROOT)} lacks {sorted({n.split('.')[0] for n in needed} - have)}"

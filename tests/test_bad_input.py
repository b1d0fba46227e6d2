"""Data tier: every kind of bad input gives a clear error or a quarantined row with its reason.
Never a bare traceback, never a silently dropped row (rows in = accepted + quarantined)."""
import json
import subprocess

import pandas as pd
import pytest

from conftest import ROOT, BIN
from flex_ml.cli import main
from flex_ml.schema import FlexMLError

HEADER_ROWS = 200


@pytest.fixture
def sample(tmp_path, credit_raw):
    "The header and first 200 rows of the real credit file, as lines."
    lines = credit_raw.read_text().splitlines()[: HEADER_ROWS + 1]
    return tmp_path, lines


def validate(tmp_path, lines=None, text=None, capsys=None, max_fraction=0.5):
    "Run `flex-ml validate` in-process on the given file content; return (exit code, stderr, out dir)."
    f = tmp_path / "in.csv"
    f.write_text(text if text is not None else "\n".join(lines) + "\n")
    params = tmp_path / "params.yaml"
    params.write_text(f"dataset: {{schema: {ROOT}/schemas/credit_default.yaml, raw: {f}}}\n"
                      f"validate: {{max_quarantine_fraction: {max_fraction}, min_rows: 1}}\n")
    out = tmp_path / "out"
    try:
        main(["validate", "--params", str(params), "--out", str(out)]); code = 0
    except SystemExit as e: code = e.code
    err = capsys.readouterr().err if capsys else ""
    return code, err, out


def quarantine(out):
    return pd.read_csv(out / "quarantine.csv")


def summary(out):
    return json.loads((out / "summary.json").read_text())


def set_field(line, col_index, value):
    f = line.split(","); f[col_index] = value; return ",".join(f)


def test_clean_sample_is_all_accepted(sample, capsys):
    tmp, lines = sample
    code, _, out = validate(tmp, lines, capsys=capsys)
    assert code == 0
    s = summary(out)
    assert (s["rows_in"], s["accepted"], s["quarantined"]) == (HEADER_ROWS, HEADER_ROWS, 0)


def test_truncated_csv_quarantines_the_broken_line(sample, capsys):
    tmp, lines = sample
    code, _, out = validate(tmp, text="\n".join(lines) + "\n" + lines[5][:17], capsys=capsys)
    assert code == 0
    q = quarantine(out)
    assert q["_line"].tolist() == [HEADER_ROWS + 2]
    assert "too few fields: expected 25, found" in q["_reasons"][0]
    s = summary(out)
    assert s["rows_in"] == s["accepted"] + s["quarantined"] == HEADER_ROWS + 1


def test_missing_column_is_a_clear_error(sample, capsys):
    tmp, lines = sample
    code, err, _ = validate(tmp, [",".join(l.split(",")[:-1]) for l in lines], capsys=capsys)
    assert code == 2
    assert "missing column(s) ['default_payment_next_month']" in err and "Traceback" not in err


def test_extra_column_is_a_clear_error(sample, capsys):
    tmp, lines = sample
    code, err, _ = validate(tmp, [lines[0] + ",SCORE"] + [l + ",1" for l in lines[1:]], capsys=capsys)
    assert code == 2 and "column(s) ['SCORE'] are not in schema" in err and "extra_columns: ignore" in err


def test_wrong_type_and_out_of_range_are_quarantined_with_reasons(sample, capsys):
    tmp, lines = sample
    lines[3] = set_field(lines[3], 5, "twenty")   # AGE
    lines[7] = set_field(lines[7], 5, "230")      # AGE above max
    lines[9] = set_field(lines[9], 1, "-5")       # LIMIT_BAL below min
    lines[11] = set_field(lines[11], 6, "1.5")    # PAY_0 not an integer
    code, _, out = validate(tmp, lines, capsys=capsys)
    assert code == 0
    q = quarantine(out).set_index("_line")["_reasons"]
    assert q[4] == "AGE: 'twenty' is not a finite number"
    assert q[8] == "AGE: 230 is above the maximum 100"
    assert q[10] == "LIMIT_BAL: -5 is below the minimum 0"
    assert q[12] == "PAY_0: '1.5' is not an integer"
    assert summary(out)["broken_rules"] == {"range": 2, "type": 2}


def test_missing_value_and_unknown_category(sample, capsys):
    tmp, lines = sample
    lines[2] = set_field(lines[2], 12, "")   # BILL_AMT1 missing, not nullable
    lines[4] = set_field(lines[4], 2, "7")   # SEX outside {1, 2}: quarantined
    lines[6] = set_field(lines[6], 3, "9")   # EDUCATION unknown but policy keep: accepted
    code, _, out = validate(tmp, lines, capsys=capsys)
    q = quarantine(out).set_index("_line")["_reasons"]
    assert q[3] == "BILL_AMT1: missing value '' (column is not nullable)"
    assert q[5] == "SEX: unknown category '7' (allowed: 1, 2)"
    assert 7 not in q.index
    assert summary(out)["unknown_categories_kept"] == {"EDUCATION": 1}


def test_duplicate_ids_keep_the_first(sample, capsys):
    tmp, lines = sample
    lines.append(lines[1])
    code, _, out = validate(tmp, lines, capsys=capsys)
    q = quarantine(out)
    assert q["_line"].tolist() == [HEADER_ROWS + 2]
    assert q["_reasons"][0] == "ID: duplicate id 1 (first seen on line 2)"


def test_empty_file(sample, capsys):
    tmp, _ = sample
    code, err, _ = validate(tmp, text="", capsys=capsys)
    assert code == 2 and "is empty (0 bytes)" in err


def test_header_only_file_fails_min_rows(sample, capsys):
    tmp, lines = sample
    code, err, _ = validate(tmp, lines[:1], capsys=capsys)
    assert code == 2 and "only 0 rows passed validation" in err


def test_wrong_delimiter(sample, capsys):
    tmp, lines = sample
    code, err, _ = validate(tmp, [l.replace(",", ";") for l in lines], capsys=capsys)
    assert code == 2 and "looks ';'-separated" in err


def test_too_much_broken_fails_the_stage_but_keeps_outputs(sample, capsys):
    tmp, lines = sample
    lines = [lines[0]] + [set_field(l, 5, "999") for l in lines[1:]]
    code, err, out = validate(tmp, lines, capsys=capsys, max_fraction=0.01)
    assert code == 2 and "200 of 200 rows (100.00%) broke the contract" in err and "AGE: 200" in err
    assert len(quarantine(out)) == 200  # the reasons are there to read


def test_not_utf8(sample, capsys):
    tmp, lines = sample
    code, err, _ = validate(tmp, text="", capsys=capsys)  # writes in.csv, overwritten below
    (tmp / "in.csv").write_bytes("\n".join(lines).encode("utf-16"))
    code, err, _ = validate_existing(tmp, capsys)
    assert code == 2 and "is not UTF-8 text" in err and "export the file as UTF-8" in err


def validate_existing(tmp_path, capsys):
    "Run validate on the in.csv already written in `tmp_path`."
    try: main(["validate", "--params", str(tmp_path / "params.yaml"), "--out", str(tmp_path / "out")]); code = 0
    except SystemExit as e: code = e.code
    return code, capsys.readouterr().err, tmp_path / "out"


def test_user_errors_never_print_a_traceback(tmp_path):
    "Through the real console script: a missing file is one message and exit status 2."
    r = subprocess.run([str(BIN / "flex-ml"), "validate", "--params", str(ROOT / "params.yaml"),
                        "--input", str(tmp_path / "nope.csv"), "--out", str(tmp_path / "o")],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr and "nope.csv does not exist" in r.stderr and "hint:" in r.stderr


@pytest.mark.parametrize("verb,args,producer", [
    ("split", ["--input", "nope/accepted.parquet"], "flex-ml validate"),
    ("train", ["--split-dir", "nope"], "flex-ml split"),
    ("evaluate", ["--split-dir", "nope", "--train-dir", "nope"], "flex-ml train"),
    ("export", ["--train-dir", "nope", "--eval-dir", "nope", "--split-dir", "nope", "--validate-dir", "nope"], "flex-ml evaluate"),
])
def test_a_stage_run_before_its_inputs_exist_names_them(tmp_path, verb, args, producer):
    "Running a verb out of order (evaluate before train): which inputs are missing and which verb writes them."
    r = subprocess.run([str(BIN / "flex-ml"), verb, "--params", str(ROOT / "params.yaml"), *args,
                        "--out", str(tmp_path / "o")], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr and f"{verb}: missing input" in r.stderr and f"(written by `{producer}`)" in r.stderr
    assert f"dvc repro {verb}" in r.stderr and not (tmp_path / "o").exists()


@pytest.mark.parametrize("args,expected", [
    (["score", "--input", "x.csv"], "No such option: --input"),
    (["train", "--epochs", "3"], "No such option: --epochs"),
    (["validate", "--out"], "Option '--out' requires an argument"),
])
def test_a_usage_mistake_is_click_usage_not_a_traceback(args, expected):
    "typer raises its own copy of click's usage errors: they still print usage and exit 2."
    r = subprocess.run([str(BIN / "flex-ml"), *args], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.returncode == 2 and expected in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_retrain_never_deletes_a_work_folder_it_did_not_make(tmp_path):
    from flex_ml.retrain import WORK_MARK, fresh_work_dir
    mine = tmp_path / "mine"; mine.mkdir(); (mine / "important.txt").write_text("keep")
    with pytest.raises(FlexMLError, match="not made by flex-ml retrain"): fresh_work_dir(mine)
    assert (mine / "important.txt").read_text() == "keep"
    w = fresh_work_dir(tmp_path / "work"); (w / "candidate.txt").write_text("old")
    assert [p.name for p in fresh_work_dir(w).iterdir()] == [WORK_MARK]  # an earlier retrain's folder is cleared


def test_monitor_with_a_params_path_that_does_not_exist_is_an_error(tmp_path):
    r = subprocess.run([str(BIN / "flex-ml"), "monitor", "--model", str(tmp_path), "--input", str(tmp_path / "x.csv"),
                        "--params", str(tmp_path / "nope.yaml")], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.returncode == 2 and "nope.yaml not found" in r.stderr and "Traceback" not in r.stderr, r.stderr


def _cli(*args, cwd=ROOT, env=None):
    import os
    r = subprocess.run([str(BIN / "flex-ml"), *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=120,
                       env=None if env is None else {**os.environ, **env})
    assert "Traceback" not in r.stderr, r.stderr
    return r


def test_paths_of_the_wrong_kind_are_messages(tmp_path):
    "A folder where a file is expected, data where a schema is expected, a CSV where Parquet or a notebook is."
    folder = tmp_path / "folder"; folder.mkdir()
    csv = tmp_path / "c.csv"; csv.write_text("a,b\n1,2\n")
    pq = tmp_path / "t.parquet"; pd.DataFrame({"a": [1]}).to_parquet(pq)
    cases = [
        (["validate", "--input", folder, "--out", tmp_path / "o"], "is a folder, not a delimited file"),
        (["schema", "check", folder], "is a folder"),
        (["schema", "check", pq], "is not text"),
        (["validate", "--params", folder], "Is a directory"),
        (["split", "--input", csv, "--out", tmp_path / "o"], "a Parquet input cannot be read"),
        (["split", "--input", pq, "--out", tmp_path / "o"], "it is not the validate stage's output for this schema"),
        (["report", "--notebook", csv, "--out", tmp_path / "o"], "is not a .ipynb file"),
        (["report", "-p", "a=[1", "--out", tmp_path / "o"], "the value is not valid YAML"),
        (["validate", "--out", csv], "File exists"),
        (["score", folder, "-o", tmp_path / "s.parquet", "--model", folder], "is not a flex_ml export"),
    ]
    for args, expected in cases:
        r = _cli(*args)
        assert r.returncode == 2 and expected in r.stderr, (args, r.stderr)


def test_bad_option_values_are_refused_before_anything_starts(tmp_path):
    for args, expected in [(["serve", "--port", "99999"], "Invalid value for '--port'"),
                           (["serve", "--max-batch", "0"], "Invalid value for '--max-batch'"),
                           (["serve", "--log-level", "verbose"], "is not a level"),
                           (["score", "x.csv", "-o", "x.parquet", "--chunk-rows", "0"], "Invalid value for '--chunk-rows'")]:
        r = _cli(*args)
        assert r.returncode == 2 and expected in r.stderr, (args, r.stderr)
    from flex_ml.service import ServeSettings
    import os
    os.environ["FLEX_ML_MAX_BATCH"] = "abc"
    try:
        with pytest.raises(FlexMLError, match="FLEX_ML_MAX_BATCH='abc' must be a whole number"): ServeSettings.from_env()
    finally: del os.environ["FLEX_ML_MAX_BATCH"]


def test_a_csv_given_as_the_prediction_log_is_a_message(tmp_path):
    from flex_ml.monitor_input import read_log
    (tmp_path / "c.csv").write_text("a,b\n1,2\n")
    with pytest.raises(FlexMLError, match="is not a prediction log database"): list(read_log(str(tmp_path / "c.csv")))


@pytest.mark.parametrize("field,value,expected", [
    ("min", "abc", "`min` must be a number, not 'abc'"), ("categories", 5, "`categories` must be a list of values"),
    ("slice_bins", [1, "x"], "`slice_bins` must be a list of numbers"), ("name", 5, "`name` must be a non-empty text"),
    ("transform", ["x"], "`transform` must be text"),
])
def test_a_schema_field_of_the_wrong_type_names_column_and_field(tmp_path, field, value, expected):
    import yaml
    d = yaml.safe_load((ROOT / "schemas/credit_default.yaml").read_text())
    d["columns"][1][field] = value
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(d))
    r = _cli("schema", "check", tmp_path / "s.yaml")
    assert r.returncode == 2 and expected in r.stderr and "column #2" in r.stderr, r.stderr


@pytest.mark.parametrize("entry,expected", [
    ({"name": "LATE", "count": ["PAY_0", "PAY_9"], "above": 0}, "'PAY_9' is neither a column of the schema nor a derived feature listed before it"),
    ({"name": "LATE", "count": ["PAY_0", "PAY_2"]}, "`count` needs `above`"),
    ({"name": "X", "sum": ["PAY_0", "PAY_2"], "avg": 1}, "derived feature 'X' has unknown fields ['avg']"),
    ({"name": "X", "sum": "PAY_0"}, "derived feature #17 'X': `sum` must be a list of texts"),
    ({"name": "PAY.0", "mean": ["PAY_2", "PAY_3"]}, "needs the identifier 'PAY_0' in the model, which column 'PAY_0' already has"),
    ({"name": "X", "sum": ["PAY_0", "PAY_2"], "clip": [float("nan"), 3]}, "`clip` must be [low, high], two finite numbers"),
    ({"name": "X", "max": ["PAY_0", "LATER"]}, "'LATER' is neither a column"),  # defined below: order matters
    ({"name": "X", "sum": ["PAY_0", "SEX"]}, "column 'SEX' must be a numeric feature (it is category, role ignored)"),
    ({"name": "X", "ratio": ["PAY_0", "PAY_2"], "mean": ["PAY_0", "PAY_2"]}, "give exactly one operation"),
    ({"name": "UTIL1", "mean": ["PAY_0", "PAY_2"]}, "derived feature 'UTIL1' is defined twice"),
])
def test_a_bad_derived_feature_names_the_entry_and_the_rule(tmp_path, entry, expected):
    import yaml
    d = yaml.safe_load((ROOT / "schemas/credit_default.yaml").read_text())
    d["derived"] += [entry, {"name": "LATER", "mean": ["PAY_0", "PAY_2"]}]
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(d))
    r = _cli("schema", "check", tmp_path / "s.yaml")
    assert r.returncode == 2 and expected in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_schema_infer_refuses_what_cannot_be_a_binary_target(tmp_path):
    f = tmp_path / "c.csv"; f.write_text("ID,x,y\n1,5,0\n2,6,1\n3,7,0\n")
    assert "a binary target needs exactly two" in _cli("schema", "infer", f, "--out", tmp_path / "s.yaml", "--target", "ID").stderr
    assert "id column 'nope' is not in" in _cli("schema", "infer", f, "--out", tmp_path / "s.yaml", "--id", "nope").stderr
    (tmp_path / "h.csv").write_text("ID,x,y\n")
    assert "has a header but no rows" in _cli("schema", "infer", tmp_path / "h.csv", "--out", tmp_path / "s.yaml").stderr
    ok = _cli("schema", "infer", f, "--out", tmp_path / "s.yaml")
    assert ok.returncode == 0 and "target 'y'" in ok.stdout


def test_fetch_does_not_record_a_users_file_in_data_dvc(tmp_path):
    "data.dvc records exactly the fetched datasets: a stray file under data/ is named, not hashed in."
    from conftest import project_copy, run
    p = project_copy(tmp_path / "proj")
    run(["flex-ml", "fetch", "--timeout", "5"], p)
    recorded = (p / "data.dvc").read_text()
    (p / "data" / "new_applications.csv").write_text("ID,LIMIT_BAL\n1,20000\n")
    r = run(["flex-ml", "fetch", "--timeout", "5"], p)
    assert "data/ holds files no schema fetches: data/new_applications.csv" in r.stderr, r.stderr
    assert (p / "data.dvc").read_text() == recorded


def test_a_corrupted_stage_output_is_a_clear_error(tmp_path):
    "A stage's JSON output edited or truncated by hand: one message naming the problem and the cure, no traceback."
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "reference.json").write_text("{broken")
    (tmp_path / "in.csv").write_text("a,b\n1,2\n")
    r = subprocess.run([str(BIN / "flex-ml"), "monitor", "--input", str(tmp_path / "in.csv"), "--model", str(tmp_path / "model"),
                        "--out", str(tmp_path / "out"), "--no-progress"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "is not valid JSON" in r.stderr and "dvc repro -f" in r.stderr and "Traceback" not in r.stderr, r.stderr

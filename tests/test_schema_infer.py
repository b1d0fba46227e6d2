"""`flex-ml schema infer`: a draft that picks the right positive class, types columns with missing
tokens, finds ids and dates, and does not turn what a sample happened to show into rules that
quarantine the rest of the file."""
import pandas as pd
import pytest

from conftest import mirror_dir
from flex_ml.cli import main
from flex_ml.data import read_raw
from flex_ml.schema import load_schema
from flex_ml.schema_infer import infer_schema
from flex_ml.validate import run_validate, validate_table


def infer(tmp_path, text, capsys, *args, name="raw.csv"):
    "Run `flex-ml schema infer` in-process on `text`; return (exit code, stdout, stderr, schema or None)."
    f = tmp_path / name
    f.write_text(text)
    out = tmp_path / "schema.yaml"
    try: main(["schema", "infer", str(f), "--out", str(out), *args]); code = 0
    except SystemExit as e: code = e.code
    cap = capsys.readouterr()
    return code, cap.out, cap.err, (load_schema(out) if code == 0 else None)


def validate(path, schema):
    return validate_table(read_raw(path, schema), schema)


def csv(header, rows):
    return header + "\n" + "\n".join(rows) + "\n"


# 1. positive class
def test_true_false_target_is_positive_true_and_the_cli_says_so(tmp_path, capsys):
    rows = [f"{i},{10 + i},{'True' if i % 9 < 2 else 'False'}" for i in range(1, 10)]  # 2 of 9 True
    code, out, err, s = infer(tmp_path, csv("id,amount,defaulted", rows), capsys)
    assert code == 0, err
    assert s.target_positive == "True" and s.target.categories == ["False", "True"]
    assert "target 'defaulted': positive class 'True' (22.2% of rows" in out


@pytest.mark.parametrize("labels,positive", [(("0", "1"), 1), (("no", "yes"), "yes"), (("N", "Y"), "Y"),
                                             (("paid", "default"), "default"), (("default", "paid"), "paid")])
def test_positive_class_conventions_then_the_rarer_class(tmp_path, capsys, labels, positive):
    common, rare = labels  # the second label is the rarer one (3 of 12 rows)
    rows = [f"{i},{rare if i % 4 == 0 else common}" for i in range(1, 13)]
    code, out, err, s = infer(tmp_path, csv("x,target", rows), capsys)
    assert code == 0, err
    assert s.target_positive == positive
    share = "25.0%" if str(positive) == rare else "75.0%"
    assert f"positive class {str(positive)!r} ({share} of rows" in out


def test_a_target_written_as_floats_is_the_integer_label(tmp_path, capsys):
    rows = [f"{i},{'1.0' if i % 4 == 0 else '0.0'}" for i in range(1, 13)]
    code, out, err, s = infer(tmp_path, csv("x,target", rows), capsys)
    assert code == 0, err
    assert s.target_positive == 1 and s.target.categories == [0, 1]
    assert validate(tmp_path / "raw.csv", s).summary["quarantined"] == 0  # validation reads 1.0 as 1 too


# 2. missing tokens
def test_numeric_column_with_na_tokens_stays_numeric_and_tokens_are_listed(tmp_path, capsys):
    eur = ["4.857", "NA", "4.86", "N/A", "null", "NaN", "4.1", "None", "", "4.2"]
    rows = [f"{v};{'unknown' if i % 3 == 0 else 'married'};{'yes' if i % 4 == 0 else 'no'}" for i, v in enumerate(eur)]
    f = tmp_path / "bank.csv"
    code, out, err, s = infer(tmp_path, csv("euribor3m;marital;y", rows), capsys, name="bank.csv")
    assert code == 0, err
    assert (s["euribor3m"].type, s["euribor3m"].nullable) == ("float", True)
    assert s.missing_values == ["", "N/A", "NA", "NaN", "None", "null"]
    assert "unknown" in s["marital"].categories and "unknown" not in s.missing_values
    r = validate(f, s)
    assert r.summary["quarantined"] == 0 and r.accepted["euribor3m"].isna().sum() == 6


# 3. ids
@pytest.mark.parametrize("name,values", [("client id", [f"C{i:03}" for i in range(1, 9)]),
                                         ("customer_id", [str(100 + i) for i in range(8)]),
                                         ("ID", [str(i) for i in range(1, 9)]), ("loan_no", [f"L-{i}" for i in range(8)]),
                                         ("ClientID", [str(i * 7) for i in range(8)])])
def test_unique_id_named_columns_get_role_id(tmp_path, capsys, name, values):
    rows = [f"{v},{i % 3},{i % 2}" for i, v in enumerate(values)]
    code, out, err, s = infer(tmp_path, csv(f"{name},grade,y", rows), capsys)
    assert code == 0, err
    assert s.id.name == name and name not in [c.name for c in s.features]


def test_a_second_id_is_ignored_and_a_repeating_one_is_not_an_id(tmp_path, capsys):
    rows = [f"{i},A{i},{i % 3},{i % 2}" for i in range(1, 9)]
    code, out, err, s = infer(tmp_path, csv("customer_id,account_no,branch_id,y", rows), capsys)
    assert code == 0, err
    assert s.id.name == "customer_id" and s["account_no"].role == "ignored"
    assert s["branch_id"].role == "feature"  # repeats: a grouping, not a row id
    assert {"customer_id", "account_no"}.isdisjoint(c.name for c in s.features)


def test_free_text_unique_per_row_is_not_a_feature(tmp_path, capsys):
    rows = [f"comment number {i},{i % 7},{i % 2}" for i in range(30)]
    code, out, err, s = infer(tmp_path, csv("note,amount,y", rows), capsys, "--max-categories", "5")
    assert code == 0, err
    assert s["note"].role == "ignored" and [c.name for c in s.features] == ["amount"]


# 4. dates
@pytest.mark.parametrize("dates,fmt,note,first", [
    (["25/03/2020", "01/04/2020", "02/04/2020"], "%d/%m/%Y", "day first: the sample has '25/03/2020'", (2020, 3, 25)),
    (["03/25/2020", "04/01/2020", "4/2/2020"], "%m/%d/%Y", "month first: the sample has '03/25/2020'", (2020, 3, 25)),
    (["03/04/2020", "05/06/2020", "07/08/2020"], "%d/%m/%Y", "day first assumed", (2020, 4, 3)),
    (["2020/03/25", "2020/4/1", "2020/04/02"], "%Y/%m/%d", "year first", (2020, 3, 25)),
    (["2020-03-25", "2020-04-01", "2020-04-02"], None, "ISO 8601", (2020, 3, 25))])
def test_dates_become_timestamps_with_their_format_and_validate(tmp_path, capsys, dates, fmt, note, first):
    rows = [f"{d},{i},{i % 2}" for i, d in enumerate(dates * 2)]
    code, out, err, s = infer(tmp_path, csv("opened,n,y", rows), capsys)
    assert code == 0, err
    c = s["opened"]
    assert (c.type, c.format) == ("timestamp", fmt) and note in c.description
    r = validate(tmp_path / "raw.csv", s)
    assert r.summary["quarantined"] == 0 and r.accepted["opened"].notna().all()
    assert r.accepted["opened"].iloc[0] == pd.Timestamp(*first)


def test_iso_dates_and_date_times_mixed_are_one_timestamp_column(tmp_path, capsys):
    rows = [f"{d},{i % 2}" for i, d in enumerate(["2024-01-01", "2024-01-01 07:00:00", "2024-01-02T08:30:00"] * 3)]
    code, out, err, s = infer(tmp_path, csv("seen,y", rows), capsys)
    assert code == 0, err
    assert (s["seen"].type, s["seen"].format) == ("timestamp", None)
    assert validate(tmp_path / "raw.csv", s).summary["quarantined"] == 0


# 5. small-count integers, 6. sample ranges
def test_small_integers_stay_integers_and_sample_ranges_are_not_limits(tmp_path, capsys):
    head = [f"{30 + i % 20};{999 if i % 5 else 3};{i % 3};{1 + i % 4};{1.1 + (i % 3) / 10:.1f};{i % 2}" for i in range(40)]
    code, out, err, s = infer(tmp_path, csv("age;pdays;previous;campaign;emp.var.rate;y", head), capsys, name="head.csv")
    assert code == 0, err
    for n in ("pdays", "previous", "campaign"): assert s[n].type == "integer" and s[n].categories is None, n
    assert (s["previous"].min, s["previous"].max, s["previous"].encode) == (0, None, "both")
    assert (s["pdays"].min, s["pdays"].encode) == (0, "numeric")  # 2 distinct values: one-hot adds nothing
    assert s["age"].min is None and s["age"].max is None and "30 to 49" in s["age"].description
    assert s["emp.var.rate"].min is None  # positive in the sample, negative later: no bound
    later = ["17;5;7;12;-1.8;1", "95;999;0;43;-3.4;0", "40;0;9;1;1.4;1"]
    full = tmp_path / "full.csv"; full.write_text(csv("age;pdays;previous;campaign;emp.var.rate;y", head + later))
    r = validate(full, s)
    assert r.summary["quarantined"] == 0, r.summary
    bad = tmp_path / "bad.csv"; bad.write_text(csv("age;pdays;previous;campaign;emp.var.rate;y", head + ["40;-1;0;1;1.1;0"]))
    assert validate(bad, s).summary["broken_rules"] == {"range": 1}  # the natural bound still holds


# 7. Parquet
def test_parquet_input_is_a_clear_error(tmp_path, capsys):
    p = tmp_path / "raw.parquet"
    pd.DataFrame({"x": [1, 2, 3], "y": [0, 1, 0]}).to_parquet(p)
    (tmp_path / "raw.bin").write_bytes(p.read_bytes())  # recognised by its bytes, not only its name
    for path in (p, tmp_path / "raw.bin"):
        try: main(["schema", "infer", str(path), "--out", str(tmp_path / "s.yaml")]); code = 0
        except SystemExit as e: code = e.code
        err = capsys.readouterr().err
        assert code == 2 and "is a Parquet file" in err and "delimited text" in err and "Traceback" not in err
        assert "to_csv" in err


def test_non_utf8_text_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "latin.csv").write_bytes("name,y\nJos\xe9,1\nAna,0\n".encode("latin-1"))
    try: main(["schema", "infer", str(tmp_path / "latin.csv"), "--out", str(tmp_path / "s.yaml")]); code = 0
    except SystemExit as e: code = e.code
    assert code == 2 and "is not UTF-8 text" in capsys.readouterr().err


# 8. blank labels
def test_blank_labels_are_named_by_line_not_blamed_on_a_schema_file(tmp_path, capsys):
    rows = [f"{i},{10 * i},{'' if i in (3, 7) else 'NA' if i == 9 else 'True' if i % 4 == 0 else 'False'}" for i in range(1, 13)]
    code, out, err, s = infer(tmp_path, csv("id,amount,defaulted", rows), capsys)
    assert code == 2
    assert "target column 'defaulted': 3 of 12 rows have no label" in err and "(lines 4, 8, 10)" in err
    assert "schema file" not in err and "label those rows or remove them" in err


def test_unlabelled_rows_are_named_by_their_real_line_after_blank_lines_and_multiline_fields(tmp_path, capsys):
    text = 'id,note,defaulted\n1,a,0\n\n2,"two\nlines",1\n3,b,\n\n4,c,0\n5,d,\n'
    (tmp_path / "raw.csv").write_text(text)
    try: main(["schema", "infer", str(tmp_path / "raw.csv"), "--out", str(tmp_path / "s.yaml")]); code = 0
    except SystemExit as e: code = e.code
    err = capsys.readouterr().err
    assert code == 2 and "(lines 6, 9)" in err, err  # what an editor shows: the blank lines and the quoted newline count


# the reviewer's case: infer from the first 10,000 rows of bank-marketing, validate all 41,188
def test_bank_marketing_draft_from_10k_rows_validates_the_full_file(tmp_path, capsys):
    raw = mirror_dir() / "bank-marketing" / "bank-additional-full.csv"
    head = tmp_path / "bank_head.csv"
    with open(raw) as f: head.write_text("".join(next(f) for _ in range(10_001)))
    s = infer_schema(head, log=lambda msg: None)
    assert (s.target.name, s.target_positive, s.delimiter) == ("y", "yes", ";")
    assert s["pdays"].type == s["previous"].type == "integer"
    assert s["contact"].unknown == "keep"
    summary = run_validate(raw, s, tmp_path / "out", max_quarantine_fraction=0.01)
    assert summary["rows_in"] == 41188 and summary["quarantine_fraction"] < 0.01, summary
    assert summary["unknown_categories_kept"]["contact"] > 0  # 'cellular' appears only after row 10,000: kept, counted


def test_a_folder_is_refused_naming_the_files_in_it(tmp_path, capsys):
    (tmp_path / "data").mkdir(); (tmp_path / "data" / "loans.csv").write_text("a,b\n1,2\n")
    try: main(["schema", "infer", str(tmp_path / "data"), "--out", str(tmp_path / "s.yaml")]); code = 0
    except SystemExit as e: code = e.code
    err = capsys.readouterr().err
    assert code == 2 and "it is a folder" in err and "loans.csv" in err, err

"""Code and data tier: splits are deterministic, stratified or by time, and leak no id;
preprocessing statistics come from train only."""
import numpy as np
import pandas as pd
import pytest

from conftest import ROOT
from flex_ml.data import read_raw
from flex_ml.features import design_matrix, fit_feature_stats, to_model_inputs
from flex_ml.schema import FlexMLError, load_schema
from flex_ml.split import check_no_leakage, labels, split_table
from flex_ml.validate import validate_table


@pytest.fixture(scope="module")
def accepted(credit_schema, credit_raw):
    return validate_table(read_raw(credit_raw, credit_schema), credit_schema).accepted


def test_stratified_split_is_deterministic_and_balanced(accepted, credit_schema):
    a = split_table(accepted, credit_schema, seed=42)
    b = split_table(accepted.sample(frac=1, random_state=0), credit_schema, seed=42)  # input order is irrelevant
    for k in ("train", "valid", "test"):
        assert a[k]["ID"].tolist() == b[k]["ID"].tolist()
        assert abs(labels(a[k], credit_schema).mean() - 0.2212) < 0.001
    assert sum(len(v) for v in a.values()) == len(accepted)
    check_no_leakage(a, "ID")
    c = split_table(accepted, credit_schema, seed=7)
    assert c["test"]["ID"].tolist() != a["test"]["ID"].tolist()


def test_time_split_holds_out_the_latest_rows():
    schema = load_schema(ROOT / "schemas" / "bank_marketing.yaml")
    df = pd.DataFrame({"_line": np.arange(2, 1002), "y": ["no", "yes"] * 500})
    s = split_table(df, schema, valid_fraction=0.15, test_fraction=0.15)
    assert s["train"]["_line"].max() < s["valid"]["_line"].min() < s["test"]["_line"].min()
    assert s["test"]["_line"].max() == 1001 and len(s["test"]) == 150


def test_bad_fractions(accepted, credit_schema):
    with pytest.raises(FlexMLError, match="must be in"):
        split_table(accepted, credit_schema, valid_fraction=0.6, test_fraction=0.5)


def test_feature_stats_come_from_train_only(accepted, credit_schema):
    s = split_table(accepted, credit_schema)
    st = fit_feature_stats(credit_schema, s["train"])
    assert st["AGE"]["median"] == float(s["train"]["AGE"].median())
    assert st["PAY_0"]["one_hot"] == sorted(s["train"]["PAY_0"].unique().tolist())
    assert "SEX" not in st and "MARRIAGE" not in st  # protected, role ignored: never model inputs
    x = design_matrix(s["train"], credit_schema, st)
    assert np.allclose(x[:, 0].mean(), 0, atol=1e-9) and np.isfinite(x).all()


def test_model_inputs_handle_missing_and_unknown(credit_schema):
    rec = {c.name: None for c in credit_schema.features}
    rec["EDUCATION"] = "never-seen"
    x = to_model_inputs([rec], credit_schema)
    assert np.isnan(x["AGE"][0]) and x["EDUCATION"][0] == "never-seen"

"""Data at scale: the generator, the embedded streaming engine and the Spark engine on generated credit rows."""
import json
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from conftest import ROOT

GENERATED = ROOT / "schemas" / "credit_default_generated.yaml"
QUIET = dict(log=lambda m: None)

# what each kind of damage must be quarantined for (broken.csv names the kind of each broken line)
REASONS = {"type": r"is not a finite number", "range": r"is (above the maximum|below the minimum)",
           "category": r"unknown category 'X9'", "missing": r"missing value '' \(column is not nullable\)",
           "timestamp": r"APPLICATION_DATE: .* is not a timestamp", "duplicate_id": r"ID: duplicate id \d+ \(first seen on line \d+\)",
           "malformed": r"too few fields|a quote \(\"\) that is not closed"}


def _generate(credit_raw, out, rows, **kw):
    from flex_ml.generate import generate
    return generate(rows, out, GENERATED, credit_raw, **{"chunk_rows": 50_000, **kw}, **QUIET)


def test_generate_is_seeded_jittered_and_unique(tmp_path, credit_raw):
    a = _generate(credit_raw, tmp_path / "a", 20_000, seed=7, formats=("csv", "parquet"))
    _generate(credit_raw, tmp_path / "b", 20_000, seed=7)
    assert (tmp_path / "a" / "data.csv").read_bytes() == (tmp_path / "b" / "data.csv").read_bytes()
    assert a["seed_rows"] == 30_000
    g = pd.read_csv(tmp_path / "a" / "data.csv")
    p = pd.read_parquet(tmp_path / "a" / "parquet")
    assert len(p) == len(g) == 20_000 and g["ID"].is_unique and (g["ID"] == np.arange(1, 20_001)).all()
    assert pd.to_datetime(g["APPLICATION_DATE"]).is_monotonic_increasing
    real = pd.read_csv(credit_raw).drop(columns=["ID"])
    feats = [c for c in real.columns if c != "default_payment_next_month"]
    copies = g[feats].merge(real[feats].drop_duplicates(), how="inner")
    assert len(copies) / len(g) < 0.05, f"{len(copies)} generated rows equal a real row"  # only all-zero amount rows
    assert g["AGE"].between(18, 100).all() and (g["LIMIT_BAL"] >= 0).all()
    assert set(g["SEX"]) == {1, 2} and abs(g["default_payment_next_month"].mean() - 0.2212) < 0.02


def test_engine_params_are_checked():
    from flex_ml.params import params_problems
    ds = {"schema": "s.yaml", "raw": "r.csv"}
    assert params_problems({"dataset": ds, "engine": {"name": "spark", "master": "local[2]",
                                                       "conf": {"spark.driver.memory": "2g"}}}) == []
    probs = params_problems({"dataset": ds, "engine": {"name": "duck", "master": "localhost", "conf": ["a=b"]}})
    assert len(probs) == 3 and "engine.name = 'duck': must be one of embedded, spark" in probs


def test_cli_streams_when_the_file_is_large(tmp_path, credit_raw):
    "validate and split through the CLI on the embedded engine, streaming: shards that pandas reads like files."
    _generate(credit_raw, tmp_path / "g", 30_000, seed=3)
    params = dict(dataset={"schema": str(GENERATED), "raw": str(tmp_path / "g" / "data.csv")},
                  engine={"name": "embedded", "in_memory_max_mb": 0, "chunk_rows": 7_000})
    (tmp_path / "params.yaml").write_text(json.dumps(params))
    cli = [sys.executable, "-m", "flex_ml.cli"]
    v = subprocess.run(cli + ["validate", "--params", "params.yaml", "--out", "v"], cwd=tmp_path, capture_output=True, text=True)
    assert v.returncode == 0, v.stderr
    assert json.loads(v.stdout)["engine"] == "embedded" and "validate: 30,000 rows read" in v.stderr
    s = subprocess.run(cli + ["split", "--params", "params.yaml", "--input", "v/accepted.parquet", "--out", "s"],
                       cwd=tmp_path, capture_output=True, text=True)
    assert s.returncode == 0, s.stderr
    summary = json.loads(s.stdout)
    assert summary["strategy"] == "time" and summary["membership"] == "days"
    parts = {n: pd.read_parquet(tmp_path / "s" / f"{n}.parquet") for n in ("train", "valid", "test")}
    assert sum(map(len, parts.values())) == 30_000
    assert parts["train"]["APPLICATION_DATE"].max() < parts["valid"]["APPLICATION_DATE"].min()
    assert parts["valid"]["APPLICATION_DATE"].max() < parts["test"]["APPLICATION_DATE"].min()


@pytest.mark.slow
@pytest.mark.heavy
def test_bad_input_at_scale(tmp_path, credit_raw):
    "1M rows, 1% broken in every way: every broken row quarantined with its reason, none lost, no crash."
    from flex_ml.engines import stream_validate
    m = _generate(credit_raw, tmp_path / "g", 1_000_000, seed=11, broken_fraction=0.01, chunk_rows=500_000)
    assert set(m["broken"]) == set(REASONS) and sum(m["broken"].values()) == 10_000
    s = stream_validate(tmp_path / "g" / "data.csv", GENERATED, tmp_path / "v", chunk_rows=200_000, **QUIET)
    assert s["rows_in"] == 1_000_000 and s["accepted"] + s["quarantined"] == 1_000_000
    q = pd.read_csv(tmp_path / "v" / "quarantine.csv", usecols=["_line", "_reasons"])
    broken = pd.read_csv(tmp_path / "g" / "broken.csv")
    assert sorted(q["_line"]) == sorted(broken["line"])  # all of them, and nothing else
    both = q.merge(broken, left_on="_line", right_on="line")
    for kind, pattern in REASONS.items():
        rows = both[both["kind"] == kind]
        assert len(rows) and rows["_reasons"].str.contains(pattern).all(), (kind, rows["_reasons"].head(3).tolist())
    assert len(pd.read_parquet(tmp_path / "v" / "accepted.parquet", columns=["ID"])) == 990_000


@pytest.fixture(scope="module")
def spark():
    from flex_ml.spark import spark_session
    s = spark_session({"master": "local[2]", "conf": {"spark.driver.memory": "2g"}})
    yield s
    s.stop()


@pytest.mark.spark
@pytest.mark.slow
def test_embedded_and_spark_agree(tmp_path, credit_raw, spark):
    "100k generated rows with 1% broken: same accepted rows, quarantine (lines, reasons, fields), counts and splits."
    from flex_ml.engines import ENGINE_DEFAULTS, stream_validate
    from flex_ml.shards import stream_split
    from flex_ml.spark import spark_split, spark_validate
    _generate(credit_raw, tmp_path / "g", 100_000, seed=5, broken_fraction=0.01, chunk_rows=30_000)
    raw, eng = tmp_path / "g" / "data.csv", {**ENGINE_DEFAULTS, "name": "spark"}
    a = stream_validate(raw, GENERATED, tmp_path / "ve", chunk_rows=25_000, **QUIET)
    b = spark_validate(raw, GENERATED, tmp_path / "vs", eng, spark=spark, **QUIET)
    same = ("rows_in", "accepted", "quarantined", "blank_lines", "broken_rules", "broken_by_column", "target_positive_rate")
    assert {k: a[k] for k in same} == {k: b[k] for k in same}
    qa, qb = (pd.read_csv(tmp_path / d / "quarantine.csv", dtype=str) for d in ("ve", "vs"))
    pd.testing.assert_frame_equal(qa, qb)
    aa, ab = (pd.read_parquet(tmp_path / d / "accepted.parquet").sort_values("_line", ignore_index=True) for d in ("ve", "vs"))
    pd.testing.assert_frame_equal(aa, ab)
    for strategy in ("auto", "stratified"):  # by days (the contract has a timestamp), and by the id hash
        se = stream_split(tmp_path / "ve" / "accepted.parquet", GENERATED, tmp_path / f"se-{strategy}", strategy=strategy, **QUIET)
        ss = spark_split(tmp_path / "vs" / "accepted.parquet", GENERATED, tmp_path / f"ss-{strategy}", eng,
                         strategy=strategy, spark=spark, **QUIET)
        for n in ("train", "valid", "test"):
            assert se[n] == ss[n]
            ids = [set(pd.read_parquet(tmp_path / f"{d}-{strategy}" / f"{n}.parquet", columns=["ID"])["ID"]) for d in ("se", "ss")]
            assert ids[0] == ids[1] and len(ids[0]) > 15_000

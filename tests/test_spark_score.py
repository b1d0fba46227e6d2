"""Batch scoring on Spark (`flex-ml score --engine spark`): the same scores, decisions and quarantine as the
one-process `flex-ml score`, on a real export and a local Spark session."""
import json

import pandas as pd
import pytest
import yaml

from conftest import BIN, ROOT, run


@pytest.mark.slow
@pytest.mark.spark
def test_spark_scores_match_the_one_process_scorer(tiny_project, credit_raw, tmp_path):
    lines = credit_raw.read_text(encoding="utf-8-sig").splitlines()
    raw = tmp_path / "batch.csv"
    fields = lines[5].split(","); fields[1] = "lots"  # a limit that is not a number: quarantined by both
    broken = ",".join(fields)
    raw.write_text("\n".join([lines[0], *lines[1:5], broken, *lines[6:400], "1,2,3"]) + "\n")  # and a truncated line
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["engine"] = {**params["engine"], "name": "spark", "master": "local[2]"}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    model = tiny_project / "artifacts" / "model"
    r = run([str(BIN / "flex-ml"), "score", str(raw), "--out", str(tmp_path / "spark"), "--model", str(model),
             "--engine", "spark", "--params", str(tmp_path / "params.yaml")], tmp_path, timeout=600)
    summary = json.loads(r.stdout[r.stdout.index("{"):])
    run([str(BIN / "flex-ml"), "score", str(raw), "--out", str(tmp_path / "one.parquet"), "--model", str(model), "--no-progress"], tmp_path)
    one = pd.read_parquet(tmp_path / "one.parquet").sort_values("_line").reset_index(drop=True)
    spark = pd.read_parquet(tmp_path / "spark" / "scores.parquet").sort_values("_line").reset_index(drop=True)
    assert summary["rows"] == 400 and summary["scored"] == len(one) == len(spark) == 398 and summary["quarantined"] == 2
    assert (spark["_line"] == one["_line"]).all() and (spark["decision"] == one["decision"]).all()
    assert (spark["score"] - one["score"]).abs().max() < 1e-6
    q = pd.read_csv(tmp_path / "spark" / "quarantine.csv")
    assert sorted(q["_line"]) == sorted(pd.read_csv(tmp_path / "one.quarantine.csv")["_line"])

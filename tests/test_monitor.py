"""Monitoring and retraining (issue 4): `flex-ml monitor` on files and on the service's prediction log
(a real SQLite file written by a real server, and a real PostgreSQL server), its failure modes, and
the retrain loop on the bank-marketing data's real drift (the drift report notebook, run by papermill)."""
import http.server
import json
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn.metrics import roc_auc_score

from conftest import BIN, ROOT, mirror_dir, project_copy, run
from test_serve import Server



def monitor(cwd, *args, check_rc=None):
    """`flex-ml monitor ARGS` run in `cwd`: the CLI's own entry point (`flex_ml.cli.main`, what the console script
    calls) in this process, its exit status and output as a finished subprocess's (a fresh interpreter costs 1.5 s a
    call; the console script itself runs in test_bad_input and test_serve, and in the slow tier's pipeline)."""
    r = _in_process(cwd, ["monitor", "--no-progress", *map(str, args)])
    assert "Traceback" not in r.stderr, r.stderr
    if check_rc is not None: assert r.returncode == check_rc, r.stdout + r.stderr
    return r


def _in_process(cwd, argv) -> subprocess.CompletedProcess:
    "`flex_ml.cli.main(argv)` with `cwd` as the working folder: its exit status, stdout and stderr."
    import contextlib, io, os
    from flex_ml.cli import main
    out, err, here = io.StringIO(), io.StringIO(), os.getcwd()
    try:
        os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try: main(argv); rc = 0
            except SystemExit as e: rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally: os.chdir(here)
    return subprocess.CompletedProcess(argv, rc, out.getvalue(), err.getvalue())


@pytest.fixture(scope="module")
def project(tiny_project):
    return tiny_project


@pytest.fixture(scope="module")
def scored_test(project) -> pd.DataFrame:
    "The credit test split (a random hold-out: no drift) with the model's scores, as the service gives them."
    test = pd.read_parquet(project / "artifacts" / "split" / "test.parquet")
    scores = pd.read_parquet(project / "artifacts" / "evaluate" / "test_scores.parquet")
    assert (test["_line"].to_numpy() == scores["_line"].to_numpy()).all()
    return test.assign(score=scores["score_model"].to_numpy())


def test_reference_travels_with_the_export(project):
    ref = json.loads((project / "artifacts" / "model" / "reference.json").read_text())
    assert ref["train"]["rows"] == 18000 and ref["test"]["rows"] == 6000 and ref["test"]["labelled"] == 6000
    assert len(ref["spec"]["features"]["LIMIT_BAL"]["edges"]) == 9 and ref["spec"]["features"]["EDUCATION"]["kind"] == "category"


def test_no_drift_stays_quiet_and_false_alarms_are_measured(project, scored_test, tmp_path):
    # 12 random windows of 500 rows of the random hold-out: nothing moved, so nothing should alarm.
    shuffled = scored_test.sample(frac=1.0, random_state=7).iloc[:6000]
    shuffled.to_parquet(tmp_path / "window.parquet")
    r = monitor(project, "--input", tmp_path / "window.parquet", "--window", "rows:500", "--out", tmp_path / "out", check_rc=0)
    s = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert s["status"] == "ok", s["alerts"]
    false_alarms = sum(w["status"] != "ok" for w in s["windows"]) / len(s["windows"])
    print(json.dumps({"windows": len(s["windows"]), "false_alarm_rate": false_alarms}))
    assert len(s["windows"]) == 12 and false_alarms <= 1 / 12
    # labels come with the file (the target column): AUC agrees with the exact figure and the model card
    assert abs(s["labels"]["auc"] - roc_auc_score(shuffled["default_payment_next_month"], shuffled["score"])) < 2e-3
    assert abs(s["labels"]["auc"] - s["labels"]["card_auc"]) < 2e-3
    html = (tmp_path / "out" / "report.html").read_text()
    assert "<img" in html and "http://" not in html and "https://" not in html  # opens offline
    assert "OK on 6,000 rows" in r.stdout
    # the labelled figures are on the console too, not only in summary.json (issue 23)
    assert re.search(r"labels: 6,000 labelled rows: AUC 0\.7\d\d ± 0\.0\d\d \(model card 0\.7\d\d\); ECE 0\.\d{3}", r.stdout), r.stdout


def test_quiet_windows_stay_under_one_percent_false_alarms(project, scored_test):
    """Issue 23: 200 windows of 1,000 rows resampled from the random hold-out (no drift, labels included)
    alerted in 6 (3%): the calibration check tested against perfect calibration, and the two label tests
    at 1% each added up. As `benchmarks/monitor.py` counts them, at most one may alert now."""
    from flex_ml.monitor import MonitorThresholds, monitor as run
    from flex_ml.monitor_input import Chunk
    params = yaml.safe_load((project / "params.yaml").read_text())
    quiet = scored_test.drop(columns="_line").iloc[np.random.default_rng(2).integers(0, len(scored_test), 200_000)].reset_index(drop=True)
    s = run([Chunk(quiet, scores=quiet["score"].to_numpy())], project / "artifacts" / "model", window="rows:1000",
            thresholds=MonitorThresholds.from_params(params), progress=False)
    alerting = [w for w in s["windows"] if w["status"] == "alert"]
    assert len(s["windows"]) == 200 and len(alerting) <= 1, [w["first_alert"] for w in alerting]


def test_an_alert_in_one_window_is_an_alert_of_the_run(project, scored_test, tmp_path):
    """Issue 23: a drift confined to one window of twelve is diluted in the whole input, which stays calm;
    the run must still alert and exit 3, naming the window: a scheduler pages on the exit status alone."""
    frame = scored_test.sample(frac=1.0, random_state=7).iloc[:6000].reset_index(drop=True)
    frame.loc[1000:1499, "AGE"] = (frame.loc[1000:1499, "AGE"] + 20).clip(upper=100)
    frame.to_parquet(tmp_path / "window.parquet")
    r = monitor(project, "--input", tmp_path / "window.parquet", "--window", "rows:500", "--out", tmp_path / "out", check_rc=3)
    s = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert s["status"] == "alert" and s["whole_status"] != "alert", s["alerts"]
    assert [w["window"] for w in s["windows"] if w["status"] == "alert"] == ["rows 1,001-1,500"], s["windows"]
    assert "ALERT on 6,000 rows" in r.stdout and "1 of 12 judged windows alert: rows 1,001-1,500 (AGE: PSI" in r.stdout, r.stdout


def test_a_shift_between_status_codes_is_seen(project, scored_test, tmp_path):
    """PAY_0's codes -2 ("no consumption") and -1 ("paid in full") are different states: a feature with
    few values gets a bin per value, so moving every -2 to -1 is a drift, not a PSI of 0.002."""
    ref = json.loads((project / "artifacts" / "model" / "reference.json").read_text())
    assert -2 in ref["spec"]["features"]["PAY_0"]["edges"] and -1 in ref["spec"]["features"]["PAY_0"]["edges"]
    moved = scored_test.assign(PAY_0=scored_test["PAY_0"].replace(-2, -1))
    moved.to_parquet(tmp_path / "moved.parquet")
    monitor(project, "--input", tmp_path / "moved.parquet", "--window", "rows:6000", "--out", tmp_path / "out")
    s = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert s["features"]["PAY_0"]["status"] != "ok" and s["features"]["PAY_0"]["psi"] > 0.1, s["features"]["PAY_0"]


def test_derived_features_are_watched_and_see_what_their_fields_hide(project, scored_test, tmp_path):
    """Credit limits shuffled between clients: every field keeps its distribution (LIMIT_BAL's PSI stays
    near 0), but who owes what against which limit has changed, and the contract's utilisation ratios,
    watched like any feature, show it."""
    ref = json.loads((project / "artifacts" / "model" / "reference.json").read_text())
    assert ref["spec"]["features"]["UTIL1"]["derived"] == "BILL_AMT1 / LIMIT_BAL clipped to [-1, 3]"
    shuffled = scored_test.assign(LIMIT_BAL=scored_test["LIMIT_BAL"].sample(frac=1.0, random_state=3).to_numpy())
    shuffled.to_parquet(tmp_path / "shuffled.parquet")
    monitor(project, "--input", tmp_path / "shuffled.parquet", "--window", "rows:6000", "--out", tmp_path / "out")
    s = json.loads((tmp_path / "out" / "summary.json").read_text())
    f = s["features"]
    assert f["LIMIT_BAL"]["status"] == "ok" and f["LIMIT_BAL"]["psi"] < 0.01 and f["BILL_AMT1"]["status"] == "ok"
    assert f["UTIL1"]["kind"] == "derived" and f["UTIL1"]["status"] == "alert" and f["UTIL1"]["psi"] > 0.25, f["UTIL1"]
    assert any(a["feature"] == "UTIL1" and "UTIL1 = BILL_AMT1 / LIMIT_BAL" in a["message"] for a in s["alerts"])
    assert "BILL_AMT1 / LIMIT_BAL" in (tmp_path / "out" / "report.html").read_text()
    # a limit that is not a number breaks the contract in LIMIT_BAL and makes no utilisation: that is
    # counted against the contract, not as "missing" (which would blame the data's completeness)
    broken = scored_test.assign(LIMIT_BAL=scored_test["LIMIT_BAL"].astype(object))
    broken.loc[broken.index[::10], "LIMIT_BAL"] = "abc"
    broken.to_csv(tmp_path / "broken.csv", index=False)
    monitor(project, "--input", tmp_path / "broken.csv", "--window", "rows:6000", "--out", tmp_path / "out2")
    f = json.loads((tmp_path / "out2" / "summary.json").read_text())["features"]
    assert abs(f["LIMIT_BAL"]["out_of_contract_rate"] - 0.1) < 1e-9 and abs(f["UTIL1"]["out_of_contract_rate"] - 0.1) < 1e-9
    assert f["UTIL1"]["missing_rate"] < 0.01 and f["UTIL1"]["formula"] == "BILL_AMT1 / LIMIT_BAL clipped to [-1, 3]"


def test_a_ratio_over_a_zero_bill_is_undefined_not_missing(project, scored_test, tmp_path):
    """REPAID1 = PAY_AMT1 / BILL_AMT2 has no value when the bill is 0 (about 8% of clients). More zero
    bills is a shift in the data, judged by PSI like any other; it is not missing data, which would
    raise the missing-rate alert while BILL_AMT2 itself is complete."""
    zero = scored_test.copy()
    rows = zero.index[zero["BILL_AMT2"] != 0][:420]  # about 7 points more zero bills
    zero.loc[rows, "BILL_AMT2"] = 0
    zero.to_parquet(tmp_path / "zero.parquet")
    monitor(project, "--input", tmp_path / "zero.parquet", "--window", "rows:6000", "--out", tmp_path / "out")
    s = json.loads((tmp_path / "out" / "summary.json").read_text())
    f = s["features"]["REPAID1"]
    assert f["missing_rate"] == 0 and f["train_missing_rate"] == 0, f
    assert f["undefined_rate"] - f["train_undefined_rate"] > 0.05, f
    assert not any(a["check"] == "missing" for a in s["alerts"]), s["alerts"]


def test_monitor_reads_the_services_sqlite_log_with_late_labels(project, scored_test, tmp_path):
    "A real server logs real requests to SQLite; the monitor reads the log and joins labels that came later."
    model = project / "artifacts" / "model"
    schema = yaml.safe_load((model / "schema.yaml").read_text())
    features = [c["name"] for c in schema["columns"] if c.get("role", "feature") == "feature"]
    db = tmp_path / "log.sqlite"
    rows = scored_test.iloc[:2000]
    records = [{"ID": int(r["ID"]), **{f: int(r[f]) for f in features}}
               for r in rows.to_dict("records")]
    s = Server(model, env={"FLEX_ML_PREDICTION_LOG": str(db)})
    try:
        for i in range(0, len(records), 250):
            assert s.client.post("/v1/predict", json={"records": records[i:i + 250]}).status_code == 200
    finally:
        assert s.stop() in (0, -15)
    labels = rows[["ID", "default_payment_next_month"]]
    labels.iloc[:1500].to_csv(tmp_path / "labels.csv", index=False)  # outcomes known for 1,500 of them so far
    monitor(project, "--log", db, "--labels", tmp_path / "labels.csv", "--window", "day", "--out", tmp_path / "out", check_rc=0)
    out = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert out["rows"] == 2000 and out["labels"]["rows"] == 1500 and len(out["windows"]) == 1
    logged = pd.read_sql("select record, score from predictions", __import__("sqlite3").connect(db))
    assert np.allclose(np.sort(logged.score), np.sort(rows.score), atol=1e-6)  # the service's scores
    exact = roc_auc_score(labels.iloc[:1500]["default_payment_next_month"], rows.iloc[:1500]["score"])
    assert abs(out["labels"]["auc"] - exact) < 2e-3
    assert out["score"]["status"] == "ok"


class Webhook:
    "A real HTTP endpoint on loopback that keeps what it is sent."
    def __init__(self):
        got = self.got = []
        class H(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                got.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(204); self.end_headers()
            def log_message(self, *a): pass
        self.server = http.server.HTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.server.server_port}/alerts"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def test_drift_in_postgresql_log_alerts_exits_3_and_posts_webhook(project, scored_test, postgres_url, tmp_path):
    from flex_ml.predlog import PredictionLog
    since = time.time()
    time.sleep(0.01)
    log = PredictionLog(postgres_url)  # the service's own writer
    rows = scored_test.iloc[:3000]
    records = [{"LIMIT_BAL": int(r["LIMIT_BAL"]) * 4, **{k: int(r[k]) for k in rows.columns
               if k.startswith(("PAY_", "BILL_AMT")) and k != "PAY_AMT1" or k in ("EDUCATION", "AGE")}}
               for r in rows.to_dict("records")]
    written = log.put("e2e-drift", records, rows.score.to_numpy() * 0.5 + 0.4, np.zeros(len(rows), int))
    log.close()
    # the writer's own error, if the write failed (CI once found the log empty here and said no more)
    assert written.exception(timeout=0) is None and log.written == len(rows), (written.exception(timeout=0), log.last_error)
    hook = Webhook()
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["monitor"]["webhook"] = hook.url
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    r = monitor(project, "--log", postgres_url, "--since", pd.Timestamp(since, unit="s").isoformat(),
                "--model-version", "e2e-drift", "--window", "rows:1000", "--params", tmp_path / "params.yaml",
                "--out", tmp_path / "out", check_rc=3)
    s = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert s["rows"] == 3000
    flagged = {a["feature"] for a in s["alerts"]}
    assert {"LIMIT_BAL", "score"} <= flagged and "AGE" not in flagged and "PAY_AMT1" in flagged  # PAY_AMT absent: missing
    assert "LIMIT_BAL" in r.stdout and "ALERT" in r.stdout
    assert hook.got and hook.got[0]["status"] == "alert" and hook.got[0]["rows"] == 3000


def test_bad_and_partial_windows_get_clear_reports(project, scored_test, tmp_path):
    cols = [c for c in scored_test.columns if c != "_line"]
    def csv(name, frame):
        p = tmp_path / name; frame.to_csv(p, index=False); return p
    part = scored_test[cols].iloc[:1000]
    # missing columns: reported, counted as missing, the rest still computed
    r = monitor(project, "--input", csv("partial.csv", part.drop(columns=["PAY_0", "BILL_AMT1"])), "--out", tmp_path / "a", check_rc=3)
    s = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert "lacks column(s) ['BILL_AMT1', 'PAY_0']" in r.stdout and s["features"]["AGE"]["status"] == "ok"
    # without scores and without AGE, no row can be scored: that, not "no labels", is why AUC is not computed
    r = monitor(project, "--input", csv("unscored.csv", part.drop(columns=["score", "AGE"])), "--out", tmp_path / "u")
    assert "the rows have labels, but none could be scored" in r.stdout and "no labels" not in r.stdout, r.stdout
    # wrong types and out-of-range values: a contract alert naming the field
    bad = part.astype({"AGE": object}).copy(); bad.loc[bad.index[:100], "AGE"] = "abc"; bad.loc[bad.index[100:150], "AGE"] = 7
    r = monitor(project, "--input", csv("bad.csv", bad), "--out", tmp_path / "b", check_rc=3)
    s = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert abs(s["features"]["AGE"]["out_of_contract_rate"] - 0.15) < 1e-9 and "AGE: 15.0% of values break the contract" in r.stdout
    # an empty window (header only): a report that says so, no alarm
    r = monitor(project, "--input", csv("empty.csv", part.iloc[:0]), "--out", tmp_path / "c", check_rc=0)
    assert "EMPTY on 0 rows" in r.stdout and "the window has no rows" in r.stdout
    assert (tmp_path / "c" / "report.html").exists()
    # one class in the labels: AUC not computed; calibration still is (and a window of non-defaulters
    # scored at 0.19 on average is rightly flagged as miscalibrated)
    one = part[part.default_payment_next_month.astype(str) == "0"]
    r = monitor(project, "--input", csv("one.csv", one), "--out", tmp_path / "d", check_rc=3)
    assert "AUC: the labelled rows hold only one class" in r.stdout and "calibration: ECE" in r.stdout
    # user mistakes: exit 2 with a message
    (tmp_path / "zero.csv").write_text("")
    part[["ID"]].to_csv(tmp_path / "ids.csv", index=False)  # outcomes without the outcome column
    for args, msg in [(["--input", tmp_path / "zero.csv"], "is empty"), (["--input", tmp_path / "nope.csv"], "does not exist"),
                      (["--input", tmp_path / "one.csv", "--window", "fortnight"], "unknown window"),
                      (["--input", tmp_path / "one.csv", "--window", "month"], "needs timestamps"),
                      (["--log", tmp_path / "nolog.sqlite"], "does not exist"),
                      (["--input", tmp_path / "one.csv", "--labels", tmp_path / "ids.csv"], "has no column 'default_payment_next_month'")]:
        r = monitor(project, *args, "--out", tmp_path / "e", check_rc=2)
        assert msg in r.stderr, (args, r.stderr)


def test_monitor_mistakes_and_edge_cases_found_in_review(project, scored_test, tmp_path):
    from flex_ml.predlog import PredictionLog
    cols = [c for c in scored_test.columns if c != "_line"]
    part = scored_test[cols].iloc[:1000].reset_index(drop=True)
    def csv(name, frame, **kw):
        p = tmp_path / name; frame.to_csv(p, index=False, **kw); return p
    def summary(out): return json.loads((tmp_path / out / "summary.json").read_text(),
                                        parse_constant=lambda c: pytest.fail(f"{c} in summary.json"))  # strict JSON
    # EDUCATION is `unknown: keep`: a new category is drift to watch, not a breach, and its rows are scored
    edu = part.drop(columns=["score"]).astype({"EDUCATION": object}); edu.loc[:49, "EDUCATION"] = 9
    r = monitor(project, "--input", csv("edu9.csv", edu), "--out", tmp_path / "a")
    s = summary("a")
    assert s["features"]["EDUCATION"]["out_of_contract_rate"] == 0 and s["labels"]["rows"] == 1000, r.stdout
    # outcomes written as yes/no are refused by name, not read as 1,000 non-defaults
    yn = part.assign(default_payment_next_month=np.where(part.default_payment_next_month.astype(str) == "1", "yes", "no"))
    r = monitor(project, "--input", csv("yn.csv", yn), "--out", tmp_path / "b", check_rc=2)
    assert "are not among its categories (0, 1): 'no'" in r.stderr, r.stderr
    # ...but with a labels file, the outcomes come from there and the traffic's own column is not read
    part[["ID", "default_payment_next_month"]].to_csv(tmp_path / "labels.csv", index=False)
    monitor(project, "--input", tmp_path / "yn.csv", "--labels", tmp_path / "labels.csv", "--out", tmp_path / "b", check_rc=0)
    assert summary("b")["labels"]["rows"] == 1000
    # a wrong delimiter or a JSON file: one clear error, not 21 "missing column" alerts or an empty report
    r = monitor(project, "--input", csv("semi.csv", part, sep=";"), "--out", tmp_path / "c", check_rc=2)
    assert "separated by ','" in r.stderr and "looks ';'-separated" in r.stderr, r.stderr
    (tmp_path / "recs.json").write_text(part.to_json(orient="records"))
    monitor(project, "--input", tmp_path / "recs.json", "--out", tmp_path / "c", check_rc=2)
    # a last window of rows:N that holds 3 rows is named for them and not judged (no labels: this is about windows;
    # the first 603 test rows happen to have an AUC of 0.71, a 2.4-sigma draw that a label check may flag)
    monitor(project, "--input", csv("w.csv", part.iloc[:603].drop(columns=["default_payment_next_month"])),
            "--window", "rows:300", "--out", tmp_path / "d", check_rc=0)
    w = summary("d")["windows"]
    assert [x["window"] for x in w] == ["rows 1-300", "rows 301-600", "rows 601-603"] and w[-1]["status"] == "not judged"
    # labels whose ids match no row: said so
    part[["ID", "default_payment_next_month"]].assign(ID=part.ID + 10**6).to_csv(tmp_path / "far.csv", index=False)
    r = monitor(project, "--input", csv("nolab.csv", part.drop(columns=["default_payment_next_month"])),
                "--labels", tmp_path / "far.csv", "--out", tmp_path / "e", check_rc=0)
    assert "none of the 1,000 rows' ID is in the labels file" in r.stdout, r.stdout
    # the log: a version it does not hold is an error listing those it does; mixed versions are a warning
    db = tmp_path / "log.sqlite"
    log = PredictionLog(str(db))
    recs = part.drop(columns=["score", "ID", "default_payment_next_month"]).astype(int).to_dict("records")
    version = json.loads((project / "artifacts" / "model" / "metadata.json").read_text())["version"]
    log.put(version, recs[:500], part.score.to_numpy()[:500], np.zeros(500, int))
    log.put("older-model", recs[500:], part.score.to_numpy()[500:], np.zeros(500, int))
    log.close()
    r = monitor(project, "--log", db, "--model-version", "nope", "--out", tmp_path / "f", check_rc=2)
    assert "no rows of model version 'nope'" in r.stderr and "older-model (500 rows)" in r.stderr, r.stderr
    r = monitor(project, "--log", db, "--out", tmp_path / "g", check_rc=0)
    s = summary("g")
    assert s["model_versions"] == {version: 500, "older-model": 500} and s["status"] == "warn"
    assert "500 of 1,000 rows were scored by model(s) older-model" in r.stdout, r.stdout
    r = monitor(project, "--log", db, "--model-version", "older-model", "--out", tmp_path / "h", check_rc=0)
    assert "pass --model that model's export" in r.stdout and "--model-version" not in r.stdout.split("older-model")[-1], r.stdout


@pytest.mark.slow
def test_bank_marketing_drift_is_seen_and_retraining_promotes(tmp_path_factory):
    """The proof on real drift: the drift notebook trains on the first months, monitors the rest and retrains.
    Then the CLI judges exports against a running service: promotion reloads it, commits and tags."""
    proj = project_copy(tmp_path_factory.mktemp("drift") / "proj")
    run([str(BIN / "flex-ml"), "fetch", "--timeout", "5"], cwd=proj)
    git_id = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    run([str(BIN / "flex-ml"), "report", "--notebook", "nbs/reports/drift.ipynb",
         "-p", "work=artifacts/drift", "-p", "epochs=15"], cwd=proj, timeout=1500)
    work = proj / "artifacts" / "drift"
    assert (proj / "artifacts" / "report" / "drift.html").stat().st_size > 50_000  # where the docs site finds it
    assert "artifacts/report/drift" not in run(["git", "status", "--porcelain"], cwd=proj).stdout  # ignored, not a stray file
    s = json.loads((work / "monitor" / "summary.json").read_text())
    w = s["windows"]
    assert s["status"] == "alert" and len(w) == 9
    # PSI saturates once a monthly indicator leaves the training range; the mean shift keeps growing
    rate = [abs(x["shift"]["euribor3m"]) for x in w]
    jobs = [abs(x["shift"]["nr.employed"]) for x in w]
    assert np.mean(rate[-3:]) > 3 * np.mean(rate[:2]) and jobs[-1] > 10 * jobs[0]
    assert all(x["psi"]["euribor3m"] > 0.25 for x in w[2:])
    decision = json.loads(next((work / "registry" / "decisions").glob("*.json")).read_text())
    assert decision["outcome"] == "promoted", decision["summary"]
    assert decision["candidate"]["auc"] >= decision["champion"]["auc"] + 0.005
    assert (work / "registry" / "current" / "saved_model.pb").exists()
    champ, cand = work / "champion" / "model", work / "registry" / "current"
    # The CLI: judge the same two exports on the hold-out, with a service to reload and git to record in.
    lines = (work / "new.csv").read_text().splitlines()
    holdout = tmp_path_factory.mktemp("holdout") / "holdout.csv"
    holdout.write_text("\n".join([lines[0]] + lines[-1600:]) + "\n")
    # reload needs an admin key, and loads only exports under the models root (here the project: champion and registry)
    server = Server(champ, env={"FLEX_ML_ADMIN_KEYS": "admin-k", "FLEX_ML_MODELS_ROOT": str(proj)})
    try:
        v0 = server.client.get("/v1/model").json()["version"]
        r = run([str(BIN / "flex-ml"), "retrain", "--candidate", str(cand), "--holdout", str(holdout), "--champion", str(champ),
                 "--params", "configs/bank_marketing/params.yaml", "--service", server.url], cwd=proj, env=git_id | {"FLEX_ML_API_KEY": "admin-k"})
        assert "PROMOTED" in r.stdout, r.stdout
        v1 = server.client.get("/v1/model").json()["version"]
        assert v1 != v0 and v1 == json.loads((proj / "registry" / "champion.json").read_text())["version"]
    finally:
        server.stop()
    assert f"model-{v1}" in run(["git", "tag"], cwd=proj).stdout
    assert "retrain: promoted" in run(["git", "log", "-1", "--format=%s"], cwd=proj).stdout
    # Judging the champion against itself: no gain, so it is kept, and that decision is recorded too.
    r = run([str(BIN / "flex-ml"), "retrain", "--candidate", str(proj / "registry" / "current"), "--holdout", str(holdout),
             "--params", "configs/bank_marketing/params.yaml", "--no-git"], cwd=proj)
    assert "REJECTED" in r.stdout and "[FAIL] AUC" in r.stdout
    assert len(list((proj / "registry" / "decisions").glob("*.json"))) == 2


def test_retrain_refuses_a_holdout_a_model_was_trained_on(project, tmp_path):
    """`retrain --candidate X --holdout F`: rows the candidate (or champion) was fitted or early-stopped on
    would flatter it; the export's seen-id hashes let retrain refuse them by id."""
    model = project / "artifacts" / "model"
    assert np.load(model / "seen_ids.npy").dtype == np.uint64
    raw = (project / "data/credit-default/default_of_credit_card_clients.csv").read_text().splitlines()
    valid_lines = pd.read_parquet(project / "artifacts/split/valid.parquet")["_line"].head(600)
    held = tmp_path / "holdout.csv"
    held.write_text("\n".join([raw[0]] + [raw[i - 1] for i in valid_lines]) + "\n")
    r = run([str(BIN / "flex-ml"), "retrain", "--candidate", str(model), "--holdout", str(held), "--champion", str(model),
             "--registry", str(tmp_path / "registry"), "--work", str(tmp_path / "work"), "--no-git"], cwd=project, check=False)
    assert r.returncode == 2 and "600 of the 600 hold-out rows were in the champion's training or validation data" in r.stderr, r.stderr
    assert not (tmp_path / "registry" / "decisions").exists()  # nothing judged, nothing recorded


@pytest.mark.slow
def test_retrain_can_be_tried_on_a_simulated_month(project, tmp_path):
    """Issue 23: a new user had no rows to retrain on (a small file's hold-out is below min_holdout_rows,
    the credit file's rows are refused as seen). `flex-ml simulate-month` draws rows the champion never
    saw, with fresh ids and their outcomes, and a base without their sources; retrain then runs end to
    end, one line per stage, and judges on rows neither model saw."""
    r = run([str(BIN / "flex-ml"), "simulate-month", "--out", str(tmp_path / "sim")], cwd=project)
    month, base = tmp_path / "sim" / "month.csv", tmp_path / "sim" / "base.csv"
    assert f"try: flex-ml retrain --new {month} --base {base}" in r.stdout, r.stdout
    m = pd.read_csv(month)
    raw = pd.read_csv(project / "data/credit-default/default_of_credit_card_clients.csv")
    assert len(m) == 3000 and m.ID.min() > raw.ID.max() and set(m.default_payment_next_month) == {0, 1}
    assert len(pd.read_csv(base)) == len(raw) - 3000
    r = run([str(BIN / "flex-ml"), "retrain", "--new", str(month), "--base", str(base), "--registry", str(tmp_path / "registry"),
             "--work", str(tmp_path / "work"), "--no-git"], cwd=project, timeout=1800)
    for stage in ("validate", "split", "train", "evaluate", "export"):
        assert f"retrain: {stage}" in r.stdout and re.search(rf"retrain: {stage}[^\n]* done in \d+ s", r.stdout), r.stdout
    assert re.search(r"retrain: (PROMOTED|REJECTED) candidate \S+ against champion \S+ on 600 held-out rows", r.stdout), r.stdout
    decision = json.loads(next((tmp_path / "registry" / "decisions").glob("*.json")).read_text())
    assert decision["inputs"]["trained_on_new_rows"] == 2400 and decision["holdout_rows"] == 600

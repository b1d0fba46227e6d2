"""Serving: the exported model behind a real HTTP server on loopback (`flex-ml serve`), driven by a
real HTTP client. Uses the export of a small real model built without a pipeline run (conftest.tiny_project)."""
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml

from conftest import BIN



def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); return s.getsockname()[1]


class Server:
    "`flex-ml serve` in a subprocess on a free loopback port."
    def __init__(self, model: Path, env: dict | None = None, args=(), preexec_fn=None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(model.parent / f"serve-{self.port}.log", "w+")
        self.proc = subprocess.Popen([str(BIN / "flex-ml"), "serve", "--model", str(model), "--port", str(self.port), *args],
                                     env=dict(os.environ, **(env or {})), stdout=self.log, stderr=subprocess.STDOUT,
                                     preexec_fn=preexec_fn)
        self.client = httpx.Client(base_url=self.url, timeout=30)
        deadline = time.time() + 90
        while time.time() < deadline:
            try:
                if self.client.get("/v1/ready").status_code == 200: return
            except httpx.TransportError: pass
            if self.proc.poll() is not None: break
            time.sleep(0.2)
        raise AssertionError(f"server did not become ready:\n{self.output()}")

    def output(self) -> str:
        self.log.flush(); self.log.seek(0); return self.log.read()

    def stop(self, timeout=30) -> int:
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout)
        self.client.close(); return code


@pytest.fixture(scope="module")
def export(tiny_project, tmp_path_factory) -> Path:
    "A private copy of the export (tests edit its contract or swap versions)."
    dest = tmp_path_factory.mktemp("serve") / "model"
    shutil.copytree(tiny_project / "artifacts" / "model", dest)
    return dest


@pytest.fixture(scope="module")
def server(export):
    s = Server(export, env={"FLEX_ML_ADMIN_LOOPBACK": "1"})  # reload without keys, on this loopback-bound server only
    yield s
    s.stop()


@pytest.fixture(scope="module")
def golden(export):
    return json.loads((export / "golden_examples.json").read_text())


def test_golden_scores_through_http(server, golden):
    r = server.client.post("/v1/predict", json={"records": [g["record"] for g in golden]})
    assert r.status_code == 200
    body = r.json()
    gaps = [abs(p["score"] - g["expected_score"]) for p, g in zip(body["predictions"], golden)]
    assert max(gaps) <= 1e-6 and len(gaps) == len(golden)
    assert {p["decision"] for p in body["predictions"]} <= {"accept", "decline"}
    one = server.client.post("/v1/predict", json={"records": [golden[0]["record"] | {"ID": 77}]}).json()
    assert abs(one["predictions"][0]["score"] - golden[0]["expected_score"]) <= 1e-6
    assert one["predictions"][0]["id"] == 77 and one["model_version"] == body["model_version"]


def problems(r):
    assert r.status_code == 422, r.text
    return {(p["record"], p["field"], p["rule"]) for p in r.json()["problems"]}


@pytest.mark.parametrize("change,expected", [
    ({"AGE": "old"}, (0, "AGE", "int_type")),
    ({"AGE": 130}, (0, "AGE", "less_than_equal")),
    ({"LIMIT_BAL": -1}, (0, "LIMIT_BAL", "greater_than_equal")),
    ({"PAY_0": 1.5}, (0, "PAY_0", "int_type")),
    ({"SEX": 1}, (0, "SEX", "extra_forbidden")),
    ({"AGE": None}, (0, "AGE", "int_type")),
    # strict types: pydantic's lax mode scored true as 1 and "29" as 29
    ({"PAY_0": True}, (0, "PAY_0", "int_type")),
    ({"AGE": "29"}, (0, "AGE", "int_type")),
    ({"ID": "abc"}, (0, "ID", "int_type")),
    # EDUCATION is not nullable: the contract's missing-value texts are refused, not scored as missing
    ({"EDUCATION": "NA"}, (0, "EDUCATION", "missing_value")),
    ({"EDUCATION": ""}, (0, "EDUCATION", "missing_value")),
    ({"EDUCATION": None}, (0, "EDUCATION", "type")),
])
def test_bad_records_get_422_naming_field_and_rule(server, golden, change, expected):
    assert expected in problems(server.client.post("/v1/predict", json={"records": [golden[0]["record"] | change]}))


def test_a_field_the_model_does_not_take_says_why(server, golden):
    r = server.client.post("/v1/predict", json={"records": [golden[0]["record"] | {"SEX": 1, "SEXE": 1}]})
    by_field = {p["field"]: p["message"] for p in r.json()["problems"]}
    assert "in the contract but is not a model input" in by_field["SEX"] and "role ignored" in by_field["SEX"]
    assert "not a column of the contract" in by_field["SEXE"]


def test_missing_field(server, golden):
    rec = dict(golden[0]["record"]); rec.pop("BILL_AMT3")
    assert (0, "BILL_AMT3", "missing") in problems(server.client.post("/v1/predict", json={"records": [rec]}))


def test_nan_and_infinity(server, golden):
    rec = golden[0]["record"]
    for token in ("NaN", "Infinity", "-Infinity"):
        body = json.dumps({"records": [rec]}).replace(f'"LIMIT_BAL": {rec["LIMIT_BAL"]}', f'"LIMIT_BAL": {token}')
        r = server.client.post("/v1/predict", content=body, headers={"content-type": "application/json"})
        assert (0, "LIMIT_BAL", "int_type") in problems(r), token  # LIMIT_BAL is an integer


def test_one_problem_per_field_and_a_body_that_is_not_json(server, golden):
    r = server.client.post("/v1/predict", json={"records": [golden[0]["record"] | {"EDUCATION": None}]})
    assert [p["field"] for p in r.json()["problems"]] == ["EDUCATION"]  # not once per branch of the union
    body = json.dumps({"records": [golden[0]["record"]]})
    for ctype in ("text/plain", "application/x-www-form-urlencoded"):
        r = server.client.post("/v1/predict", content=body, headers={"content-type": ctype})
        assert r.status_code == 415 and "must be JSON" in r.json()["detail"], (ctype, r.text)
    r = server.client.post("/v1/predict", content=body, headers={"content-type": "application/json; charset=utf-8"})
    assert r.status_code == 200, r.text


def test_an_integer_beyond_64_bits_is_a_422(server, golden):
    r = server.client.post("/v1/predict", content=json.dumps({"records": [dict(golden[0]["record"], ID=2**70)]}),
                           headers={"content-type": "application/json"})
    assert (0, "ID", "less_than_equal") in problems(r), r.text


def test_a_repeated_key_is_refused(server, golden):
    # parsers disagree on which of two values counts: a gateway and the model must not see different records
    rec = golden[0]["record"]
    ok = json.dumps({"records": [rec, rec]})
    age = f'"AGE": {rec["AGE"]}'
    twice = ok[::-1].replace(age[::-1], (age + ', "AGE": 99')[::-1], 1)[::-1]  # the second record only
    r = server.client.post("/v1/predict", content=twice, headers={"content-type": "application/json"})
    assert r.status_code == 422 and (1, "AGE", "duplicate_key") in problems(r), r.text
    r = server.client.post("/v1/predict", content=ok[:-1] + ', "explain": false, "explain": true}',
                           headers={"content-type": "application/json"})
    assert r.status_code == 422 and (None, "explain", "duplicate_key") in problems(r), r.text
    r = server.client.post("/v1/predict", content=ok, headers={"content-type": "application/json"})
    assert r.status_code == 200, r.text


def test_text_that_is_not_unicode_is_a_422_not_a_500(server, golden):
    # a lone surrogate escape parses as JSON, but no UTF-8 response, log or file can hold it
    rec = json.dumps({"records": [golden[0]["record"]]})
    for field, value in (("EDUCATION", '"\\ud800"'), ("AGE", '"\\udfff"')):
        body = rec.replace(f'"{field}": {golden[0]["record"][field]}', f'"{field}": {value}')
        r = server.client.post("/v1/predict", content=body, headers={"content-type": "application/json"})
        assert r.status_code == 422 and r.json()["problems"][0]["field"] == field, r.text
    r = server.client.post("/v1/predict", content=rec[:-1] + ', "\\udfff": 1}', headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text
    r = server.client.post("/v1/admin/reload", content='{"path": "\\ud800"}', headers={"content-type": "application/json"})
    assert 400 <= r.status_code < 500 and set(r.json()) >= {"error", "detail"}, r.text
    metrics = server.client.get("/metrics").text
    assert 'status="500"' not in metrics, [l for l in metrics.splitlines() if 'status="500"' in l]


def test_reload_refuses_unknown_fields(server, export):
    # as /v1/predict does: {"path": ..., "pth": ...} is a typo to report, not a reload of the current export
    r = server.client.post("/v1/admin/reload", json={"path": str(export), "force": True})
    assert r.status_code == 422 and r.json()["problems"][0]["field"] == "force", r.text


def test_a_whole_number_sent_as_a_float_scores_as_the_integer(server, golden):
    # pandas writes an integer column with a gap as floats: 29.0 is 29 (as in a CSV), and "2.0" is category 2
    rec = golden[0]["record"]
    same = [rec, rec | {"AGE": float(rec["AGE"]), "EDUCATION": float(rec["EDUCATION"])}, rec | {"EDUCATION": f"{rec['EDUCATION']}.0"}]
    # one request each: in one batch, a row's float32 score can differ in the last bit with its place in
    # the matrix product (BLAS blocks rows), which is not what this is about
    scores = []
    for one in same:
        r = server.client.post("/v1/predict", json={"records": [one]})
        assert r.status_code == 200, r.text
        scores.append(r.json()["predictions"][0]["score"])
    assert scores[1] == scores[0] and scores[2] == scores[0], scores
    batch = [p["score"] for p in server.client.post("/v1/predict", json={"records": same}).json()["predictions"]]
    assert max(abs(b - scores[0]) for b in batch) <= 1e-6, batch  # the golden parity tolerance
    assert (0, "AGE", "int_type") in problems(server.client.post("/v1/predict", json={"records": [rec | {"AGE": 29.5}]}))


def test_every_error_body_has_error_and_detail(server, golden):
    r = server.client.post("/v1/predict", json={"records": [golden[0]["record"] | {"AGE": 130, "LIMIT_BAL": -1}]})
    b = r.json()
    assert r.status_code == 422 and b["error"] == "invalid request" and len(b["problems"]) == 2
    assert b["detail"].startswith("record 0 field ") and b["detail"].endswith("(and 1 more)"), b["detail"]
    for r, code in ((server.client.get("/v1/predict"), 405), (server.client.get("/v1/nothing"), 404)):
        assert r.status_code == code and set(r.json()) == {"error", "detail"}, r.text


def test_empty_and_invalid_bodies(server):
    deep = b'{"records": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"  # once a RecursionError: a 500
    for content in (b"", b"{", b"[]", b'{"records": []}', b'{"records": "x"}', b"not json", deep):
        r = server.client.post("/v1/predict", content=content, headers={"content-type": "application/json"})
        assert r.status_code == 422, (content, r.text)
        assert r.json()["problems"], content


def test_a_record_that_is_not_an_object_names_the_record(server, golden):
    r = server.client.post("/v1/predict", json={"records": [golden[0]["record"], "a"]})
    (p,) = r.json()["problems"] if r.status_code == 422 else [None]
    assert r.status_code == 422 and p["record"] == 1 and p["field"] is None and p["value"] == "a", r.text
    assert r.json()["detail"].startswith("record 1: "), r.text


def test_limits_and_unknown_category_policy(export, golden, tmp_path):
    "Batch and body limits come from settings; the unknown-category rule comes from the contract."
    strict = tmp_path / "model"
    shutil.copytree(export, strict)
    schema = yaml.safe_load((strict / "schema.yaml").read_text())
    for c in schema["columns"]:
        if c["name"] == "EDUCATION": c["unknown"] = "quarantine"
    (strict / "schema.yaml").write_text(yaml.safe_dump(schema, sort_keys=False))
    from flex_ml.bundle import write_manifest
    write_manifest(strict)  # an export changed on purpose is sealed again; one changed otherwise is refused
    s = Server(strict, env={"FLEX_ML_MAX_BATCH": "5", "FLEX_ML_MAX_BODY_BYTES": "20000"})
    try:
        rec = golden[0]["record"]
        assert (0, "EDUCATION", "literal_error") in problems(s.client.post("/v1/predict", json={"records": [rec | {"EDUCATION": 9}]}))
        assert s.client.post("/v1/predict", json={"records": [rec | {"EDUCATION": 2}]}).status_code == 200
        assert (None, "records", "too_long") in problems(s.client.post("/v1/predict", json={"records": [rec] * 6}))
        big = s.client.post("/v1/predict", json={"records": [rec] * 200})
        assert big.status_code == 413 and "limit is 20000" in big.json()["detail"]
    finally:
        s.stop()


def test_numpy_runtime_equals_the_savedmodel_and_tensorflow_remains_available(export, golden, tiny_project):
    "The service scores with the NumPy runtime by default; it must equal the SavedModel on every test row."
    import pandas as pd
    from flex_ml.bundle import load_serving_function
    from flex_ml.features import to_model_inputs
    from flex_ml.runtime import NumpyModel
    from flex_ml.schema import load_schema
    schema = load_schema(export / "schema.yaml")
    x = to_model_inputs(pd.read_parquet(tiny_project / "artifacts" / "split" / "test.parquet"), schema)
    np_scores, tf_scores = NumpyModel(export)(x), load_serving_function(export)(x)
    assert len(np_scores) == 6000 and abs(np_scores - tf_scores).max() <= 1e-6
    # requests take a shorter path: records straight into the fused plan's input matrix
    from flex_ml.bundle import to_raw_record
    from flex_ml.bundle import ServingModel
    test = pd.read_parquet(tiny_project / "artifacts" / "split" / "test.parquet").head(2000)
    records = [to_raw_record(r, schema) for r in test.to_dict("records")]
    served = ServingModel(export)
    assert served._direct is not None and abs(served.score(records) - tf_scores[:2000]).max() <= 1e-6
    records[0] = dict(records[0], LIMIT_BAL=None)  # a null takes the general path, which imputes it
    assert np.isfinite(served.score(records[:1])).all()
    code = ("import sys; from flex_ml.bundle import ServingModel; m = ServingModel(sys.argv[1]); m.warm_up(); "
            "print(m.runtime, 'tensorflow' in sys.modules)")
    out = subprocess.run([str(BIN / "python"), "-c", code, str(export)], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["numpy", "False"]  # the service starts without importing TensorFlow
    meta = json.loads((export / "metadata.json").read_text())
    assert meta["runtimes"]["numpy"] <= 1e-6 and meta["runtimes"]["tensorflow"] <= 1e-6
    s = Server(export, env={"FLEX_ML_RUNTIME": "tensorflow"})
    try:
        assert s.client.get("/v1/model").json()["runtime"] == "tensorflow"
        r = s.client.post("/v1/predict", json={"records": [g["record"] for g in golden]}).json()
        assert max(abs(p["score"] - g["expected_score"]) for p, g in zip(r["predictions"], golden)) <= 1e-6
    finally:
        s.stop()


def test_health_ready_model_metrics_openapi(server, golden):
    c = server.client
    assert c.post("/v1/predict", json={"records": [golden[0]["record"]]}).status_code == 200  # so the metrics have a request
    assert c.get("/v1/health").json() == {"status": "ok"}
    ready = c.get("/v1/ready").json()
    info = c.get("/v1/model").json()
    assert ready["model_version"] == info["version"] and "## Intended use" in info["model_card"]
    assert info["metadata"]["schema"]["name"] == "credit_default" and info["runtime"] == "numpy"
    m = c.get("/metrics").text
    assert 'flex_ml_requests_total{path="/v1/predict",status="200"}' in m
    assert "flex_ml_request_seconds_bucket" in m and "flex_ml_batch_records_bucket" in m and "flex_ml_scores_bucket" in m
    spec = c.get("/openapi.json").json()
    record = spec["components"]["schemas"]["CreditDefaultRecord"]
    assert record["properties"]["AGE"]["maximum"] == 100 and record["properties"]["AGE"]["examples"]
    assert "SEX" not in record["properties"] and record["additionalProperties"] is False
    answer = spec["paths"]["/v1/predict"]["post"]["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    decision = spec["components"]["schemas"][answer.split("/")[-1]]["properties"]["predictions"]["items"]["properties"]["decision"]
    assert decision["enum"] == ["decline", "accept"]  # the contract's words
    assert "securitySchemes" not in spec["components"]  # no keys configured: nothing to send
    # issue 23: how to send the ID (to join outcomes later) is on the API page, not only in the record's schema
    assert "Send each record's `ID` beside its fields" in spec["info"]["description"] and "--labels" in spec["info"]["description"]
    assert "joined on it" in record["properties"]["ID"]["description"]
    # ...and the start-up line says the prediction log is off
    assert "prediction log off (set FLEX_ML_PREDICTION_LOG" in server.output(), server.output()


def test_api_page_renders_offline_in_chromium(server, browser):
    "GET /docs draws the operations with Swagger UI served by the service itself, no CDN."
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    pg, outside, errors = ctx.new_page(), [], []
    pg.route("**/*", lambda r: r.continue_() if r.request.url.startswith(server.url) else (outside.append(r.request.url), r.abort()))
    pg.on("pageerror", lambda e: errors.append(str(e)))
    try:
        pg.goto(server.url + "/docs")
        pg.wait_for_selector(".opblock-summary-path", timeout=30_000)
        paths = pg.eval_on_selector_all(".opblock-summary-path", "els => els.map(e => e.textContent.trim())")
        assert "/v1/predict" in paths and "/v1/model" in paths
        assert "CreditDefaultRecord" in pg.inner_text("body")  # the contract's request schema is listed
        assert not outside and not errors, (outside, errors)
    finally:
        ctx.close()
    missing = server.client.get("/docs/assets/nothing.js")
    assert missing.status_code == 404 and missing.json()["error"] == "not found"
    assert server.client.get("/redoc").status_code == 404  # FastAPI's ReDoc page needs a CDN: not served


def test_api_key_auth(export, golden):
    s = Server(export, env={"FLEX_ML_API_KEYS": "k-one,k-two-secret"})
    try:
        body = {"records": [golden[0]["record"]]}
        assert s.client.post("/v1/predict", json=body).status_code == 401
        assert s.client.post("/v1/predict", json=body, headers={"X-API-Key": "wrong"}).status_code == 401
        assert s.client.post("/v1/predict", json=body, headers={"X-API-Key": "k-two-secret"}).status_code == 200
        assert s.client.get("/v1/health").status_code == 200  # probes need no key
        # the FastAPI route (admin reload) and the plain-ASGI fast path answer 401 with the same body shape
        for r in (s.client.post("/v1/predict", json=body), s.client.post("/v1/admin/reload", json={})):
            assert r.status_code == 401 and r.json()["error"] == "unauthorized" and "X-API-Key" in r.json()["detail"], r.text
        # the OpenAPI document declares the key, so the API page's "Authorize" button and generated clients send it
        spec = s.client.get("/openapi.json").json()
        assert spec["components"]["securitySchemes"]["ApiKey"] == {"type": "apiKey", "in": "header", "name": "X-API-Key"}
        assert spec["paths"]["/v1/predict"]["post"]["security"] == [{"ApiKey": []}]
    finally:
        s.stop()
    assert "k-two-secret" not in s.output() and "k-one" not in s.output()


def test_hot_reload_under_load_has_no_failed_request(server, golden, export):
    body = {"records": [golden[0]["record"]]}
    failures, done, stop = [], [0], threading.Event()
    def load():
        with httpx.Client(base_url=server.url, timeout=30) as c:
            while not stop.is_set():
                r = c.post("/v1/predict", json=body)
                if r.status_code != 200: failures.append(r.status_code)
                done[0] += 1
    threads = [threading.Thread(target=load) for _ in range(3)]
    for t in threads: t.start()
    try:
        time.sleep(0.5)
        for _ in range(2):
            r = server.client.post("/v1/admin/reload", json={"path": str(export)})
            assert r.status_code == 200, r.text
        time.sleep(0.5)
    finally:
        stop.set()
        for t in threads: t.join()
    assert not failures and done[0] > 50
    assert 'flex_ml_model_reloads_total{outcome="ok"} 2.0' in server.client.get("/metrics").text
    outside = server.client.post("/v1/admin/reload", json={"path": "/nonexistent"})
    assert outside.status_code == 403 and "outside the models root" in outside.json()["detail"], outside.text
    bad = server.client.post("/v1/admin/reload", json={"path": "nothing-here"})  # under the models root, but no export
    assert bad.status_code == 409 and "there is no export at 'nothing-here'" in bad.json()["detail"], bad.text
    assert str(export.parent) not in bad.text  # the folder on disk is not the client's business
    twice = server.client.post("/v1/admin/reload", content=f'{{"path": "{export}", "path": "/elsewhere"}}',
                               headers={"content-type": "application/json"})
    assert twice.status_code == 422 and twice.json()["problems"][0]["rule"] == "duplicate_key"
    assert 'flex_ml_model_reloads_total{outcome="ok"} 2.0' in server.client.get("/metrics").text  # nothing reloaded
    # `curl -d '{"path": ...}'` sends a form content type, which FastAPI would read as no body: refused, not the current export reloaded
    form = server.client.post("/v1/admin/reload", content=f'{{"path": "/elsewhere"}}', headers={"content-type": "application/x-www-form-urlencoded"})
    assert form.status_code == 415 and form.json()["error"] == "unsupported media type"
    nested = server.client.post("/v1/admin/reload", json={"path": str(export), "note": {"path": "x"}})
    # only the request's own keys count as repeated; an unknown one is refused, as /v1/predict does
    assert nested.status_code == 422 and [(p["field"], p["rule"]) for p in nested.json()["problems"]] == [("note", "extra_forbidden")]


def test_bounded_load_has_zero_errors(server, golden):
    body = {"records": [golden[1]["record"]]}
    errors, count, deadline = [], [0], time.time() + 3
    def load():
        with httpx.Client(base_url=server.url, timeout=30) as c:
            while time.time() < deadline:
                r = c.post("/v1/predict", json=body)
                count[0] += 1
                if r.status_code != 200: errors.append(r.status_code)
    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads: t.start()
    for t in threads: t.join()
    assert not errors and count[0] > 100


def test_graceful_shutdown_finishes_requests_and_flushes_log(export, golden, tmp_path):
    db = tmp_path / "predictions.db"
    s = Server(export, args=("--log-db", str(db)))
    rec = golden[0]["record"]
    n_small = 20
    for _ in range(n_small): assert s.client.post("/v1/predict", json={"records": [rec]}).status_code == 200
    result, started = {}, threading.Event()
    payload = json.dumps({"records": [rec] * 5000}).encode()
    def body():  # a slow upload: the request is surely in flight when SIGTERM arrives
        yield payload[:1000]
        started.set(); time.sleep(1.0)
        yield payload[1000:]
    def big():
        with httpx.Client(base_url=s.url, timeout=60) as c:
            result["r"] = c.post("/v1/predict", content=body(), headers={"content-type": "application/json"})
    t = threading.Thread(target=big); t.start()
    started.wait(30); time.sleep(0.2)
    code = s.stop(timeout=60)
    t.join()
    assert code == 0, s.output()  # a stop that was asked for and went cleanly is not a crash
    assert "prediction log flushed: 5020 records" in s.output()
    assert result["r"].status_code == 200 and len(result["r"].json()["predictions"]) == 5000
    rows = sqlite3.connect(db).execute("select count(*), count(distinct model_version) from predictions").fetchone()
    assert rows == (n_small + 5000, 1)


def test_reason_codes_are_stable_and_name_the_driver(server, golden):
    rec = golden[0]["record"] | {"PAY_0": 3, "PAY_2": 0, "PAY_3": 0, "PAY_4": 0, "PAY_5": 0, "PAY_6": 0}
    body = {"records": [rec], "explain": True, "top_reasons": 4}
    a, b = (server.client.post("/v1/predict", json=body).json() for _ in range(2))
    assert a["predictions"] == b["predictions"]  # deterministic
    reasons = a["predictions"][0]["reasons"]
    assert reasons[0]["field"] == "PAY_0" and reasons[0]["value"] == 3 and reasons[0]["typical"] == 0
    impacts = [r["impact"] for r in reasons]
    assert len(reasons) <= 4 and all(i > 0 for i in impacts) and impacts == sorted(impacts, reverse=True)
    plain = server.client.post("/v1/predict", json={"records": [rec]}).json()["predictions"][0]
    assert "reasons" not in plain and plain["score"] == a["predictions"][0]["score"]
    assert (None, "top_reasons", "less_than_equal") in problems(
        server.client.post("/v1/predict", json=body | {"top_reasons": 50}))


def test_prediction_log_in_postgresql(export, golden, postgres_url):
    import psycopg
    t0 = time.time()  # the database is shared with other tests (monitoring writes its own rows)
    with_password = postgres_url.replace("flex@", "flex:s3cret-pw@")  # the test server trusts loopback: ignored
    s = Server(export, args=("--log-db", with_password))
    try:
        for _ in range(30): assert s.client.post("/v1/predict", json={"records": [golden[0]["record"]]}).status_code == 200
        s.client.post("/v1/predict", json={"records": [g["record"] for g in golden]})
    finally:
        s.stop()
    # the start-up line says where the log goes, without the credentials (issue 23)
    host = postgres_url.split("@")[1]
    assert f"prediction log on, PostgreSQL {host}" in s.output() and "s3cret" not in s.output(), s.output()
    with psycopg.connect(postgres_url) as db:
        n, versions, top = db.execute("select count(*), count(distinct model_version), max(score) from predictions "
                                      "where ts >= %s", (t0,)).fetchone()
    assert n == 30 + len(golden) and versions == 1 and 0 < top < 1


def test_bad_log_url_is_a_clear_startup_error(export):
    r = subprocess.run([str(BIN / "flex-ml"), "serve", "--model", str(export), "--port", str(free_port()),
                        "--log-db", "postgresql://nobody@127.0.0.1:1/none"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "cannot connect to the prediction log database" in r.stderr and "Traceback" not in r.stderr


def test_batch_scoring_matches_golden_and_quarantines(export, golden, tmp_path, credit_raw):
    "flex-ml score: the service's scores from a file, in chunks, with bad rows quarantined."
    import pandas as pd
    rows = [dict(g["record"], ID=i + 1) for i, g in enumerate(golden)]
    pd.DataFrame(rows + [dict(rows[0], ID=999, LIMIT_BAL="oops")]).to_csv(tmp_path / "in.csv", index=False)
    text = (tmp_path / "in.csv").read_text().splitlines()
    # a line with a field too many and a truncated one, among the good rows: quarantined, nothing shifts
    text[3:3] = [text[3] + ",7", text[3][:15]]
    (tmp_path / "in.csv").write_text("\n".join(text) + "\n")
    r = subprocess.run([str(BIN / "flex-ml"), "score", str(tmp_path / "in.csv"), "-o", str(tmp_path / "out.parquet"),
                        "--model", str(export), "--chunk-rows", "7", "--no-progress"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert (summary["rows"], summary["scored"], summary["quarantined"], summary["malformed_lines"]) == \
        (len(golden) + 3, len(golden), 3, 2)
    out = pd.read_parquet(tmp_path / "out.parquet")
    gaps = (out["score"].to_numpy() - [g["expected_score"] for g in golden])
    assert abs(gaps).max() <= 1e-6 and out["ID"].tolist() == list(range(1, len(golden) + 1))
    assert out["_line"].tolist() == [2, 3] + list(range(6, len(golden) + 4))  # file lines; 4 and 5 are the broken ones
    q = pd.read_csv(tmp_path / "out.quarantine.csv")
    assert q["_line"].tolist() == [4, 5, len(golden) + 4]
    assert q["_reasons"][0].startswith("too many fields") and q["_reasons"][1].startswith("too few fields"), q["_reasons"]
    assert q["_reasons"].iloc[-1] == "LIMIT_BAL: 'oops' is not a finite number" and q["_raw"].notna().sum() == 2
    # `-o x.csv` writes CSV (not Parquet under a .csv name), with the same rows; an unknown extension is refused
    run = lambda o: subprocess.run([str(BIN / "flex-ml"), "score", str(tmp_path / "in.csv"), "-o", str(tmp_path / o),
                                    "--model", str(export), "--chunk-rows", "7", "--no-progress"], capture_output=True, text=True)
    assert run("out.csv").returncode == 0
    as_csv = pd.read_csv(tmp_path / "out.csv")
    assert as_csv["_line"].tolist() == out["_line"].tolist() and abs(as_csv["score"] - out["score"]).max() == 0
    r = run("out.xlsx")
    assert r.returncode == 2 and "Parquet (.parquet) or CSV (.csv)" in r.stderr and "Traceback" not in r.stderr, r.stderr
    # chunk workers (the default here: params.yaml's engine.workers 0, one per core) write what one process writes
    by = {}
    for n in (1, 3):
        r = subprocess.run([str(BIN / "flex-ml"), "score", str(tmp_path / "in.csv"), "-o", str(tmp_path / f"w{n}.parquet"),
                            "--model", str(export), "--chunk-rows", "7", "--no-progress", "--workers", str(n)], capture_output=True, text=True)
        assert r.returncode == 0 and json.loads(r.stdout)["workers"] == n, r.stderr
        by[n] = (pd.read_parquet(tmp_path / f"w{n}.parquet"), (tmp_path / f"w{n}.quarantine.csv").read_text())
    pd.testing.assert_frame_equal(by[1][0], by[3][0]); pd.testing.assert_frame_equal(by[1][0], out)
    assert by[1][1] == by[3][1] == (tmp_path / "out.quarantine.csv").read_text()


def test_batch_scoring_without_id_and_with_no_good_row(export, golden, tmp_path):
    "The id column is optional, and -o always names this run's output, even when no row could be scored."
    import pandas as pd
    def score(rows, name):
        pd.DataFrame(rows).to_csv(tmp_path / f"{name}.csv", index=False)
        return subprocess.run([str(BIN / "flex-ml"), "score", str(tmp_path / f"{name}.csv"), "-o", str(tmp_path / "out.parquet"),
                               "--model", str(export), "--no-progress"], capture_output=True, text=True)
    r = score([g["record"] for g in golden], "noid")  # golden records carry no ID, like a request
    assert r.returncode == 0, r.stderr
    out = pd.read_parquet(tmp_path / "out.parquet")
    assert len(out) == len(golden) and "ID" not in out
    r = score([dict(golden[0]["record"], LIMIT_BAL=-1)] * 3, "allbad")  # over the previous output
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["scored"] == 0
    out = pd.read_parquet(tmp_path / "out.parquet")
    assert len(out) == 0 and {"_line", "score", "decision", "model_version"} <= set(out.columns)
    assert not (tmp_path / "out.parquet.partial").exists()


# ---- faults: kill -9, damaged exports, a full disk, slow and hostile clients (issue 21)

def answered_then_killed(s: Server, golden, at_least: int = 300, clients: int = 4) -> list[str]:
    """Request ids of the predictions `s` answered 200 while `clients` threads sent them, then `kill -9` of
    the server with requests still in flight. Bounded: at most 60 s of load."""
    ids, stop, lock = [], threading.Event(), threading.Lock()
    body = {"records": [golden[0]["record"], golden[1]["record"]]}
    def load():
        with httpx.Client(base_url=s.url, timeout=10) as c:
            while not stop.is_set():
                try: r = c.post("/v1/predict", json=body)
                except httpx.TransportError: return
                if r.status_code == 200:
                    with lock: ids.append(r.json()["request_id"])
    threads = [threading.Thread(target=load) for _ in range(clients)]
    for t in threads: t.start()
    deadline = time.time() + 60
    while len(ids) < at_least and time.time() < deadline: time.sleep(0.01)
    s.proc.kill()  # SIGKILL: no shutdown, no flush
    s.proc.wait(30); stop.set()
    for t in threads: t.join(30)
    s.client.close()
    with lock: return list(ids)


def test_kill_9_loses_no_answered_prediction_sqlite(export, golden, tmp_path):
    db = tmp_path / "predictions.db"
    ids = answered_then_killed(Server(export, args=("--log-db", str(db))), golden)
    logged = {r for (r,) in sqlite3.connect(db).execute("select distinct request_id from predictions")}
    assert len(ids) >= 300 and not (set(ids) - logged), f"{len(set(ids) - logged)} of {len(ids)} answered requests are not in the log"
    n = sqlite3.connect(db).execute("select count(*) from predictions where request_id is not null").fetchone()[0]
    assert n >= 2 * len(ids)  # two records a request, each with its request id


def test_kill_9_loses_no_answered_prediction_postgresql(export, golden, postgres_url):
    import psycopg
    ids = answered_then_killed(Server(export, args=("--log-db", postgres_url)), golden)
    with psycopg.connect(postgres_url) as db:
        logged = {r for (r,) in db.execute("select distinct request_id from predictions where request_id = any(%s)", (ids,))}
    assert len(ids) >= 300 and not (set(ids) - logged), f"{len(set(ids) - logged)} of {len(ids)} answered requests are not in the log"


@pytest.mark.parametrize("policy", ["fail_closed", "fail_open"])
def test_a_database_that_goes_down_follows_the_log_policy_and_is_used_again_when_back(export, golden, policy):
    import psycopg
    from conftest import PostgresServer
    pg = PostgresServer()  # a server of its own: this test crashes it
    s = Server(export, args=("--log-db", pg.url), env={"FLEX_ML_LOG_POLICY": policy})
    body = {"records": [golden[0]["record"]]}
    try:
        before = [s.client.post("/v1/predict", json=body) for _ in range(20)]
        assert {r.status_code for r in before} == {200}
        pg.stop("immediate")  # connections cut, as in a crash or a failover
        down = [s.client.post("/v1/predict", json=body) for _ in range(5)]
        metrics = s.client.get("/metrics").text
        assert "flex_ml_prediction_log_ok 0.0" in metrics, s.output()[-2000:]
        if policy == "fail_closed":
            assert {r.status_code for r in down} == {503}, [r.text for r in down]
            assert "prediction log could not be written" in down[0].json()["detail"]
        else:
            assert {r.status_code for r in down} == {200} and {r.headers["x-prediction-logged"] for r in down} == {"false"}
            assert "flex_ml_predictions_unlogged_total 5.0" in metrics
        pg.start()
        after, deadline = None, time.time() + 30  # bounded: the log reconnects on its next write
        while time.time() < deadline:
            after = s.client.post("/v1/predict", json=body)
            if after.status_code == 200 and "x-prediction-logged" not in after.headers: break
            time.sleep(0.2)
        assert after.status_code == 200 and "x-prediction-logged" not in after.headers, after.text
        assert "flex_ml_prediction_log_ok 1.0" in s.client.get("/metrics").text
        acknowledged = {r.json()["request_id"] for r in before + [after]}
    finally:
        s.stop()
        try:
            with psycopg.connect(pg.url) as db: logged = {r for (r,) in db.execute("select distinct request_id from predictions")}
        finally:
            pg.close()
    assert acknowledged <= logged, f"{len(acknowledged - logged)} answered-as-logged requests are not in the log"
    unlogged = {r.json()["request_id"] for r in down if r.status_code == 200}
    assert not (unlogged & logged)  # fail_open answered them and said so; they were never written


def _file_size_limit(n: int):
    "A real limit on the server's files (RLIMIT_FSIZE): writing past `n` bytes fails with EFBIG, as on a full disk."
    import resource
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (n, n))


@pytest.mark.parametrize("policy", ["fail_closed", "fail_open"])
def test_a_full_disk_follows_the_log_policy(export, golden, tmp_path, policy):
    db = tmp_path / "predictions.db"
    s = Server(export, args=("--log-db", str(db)), env={"FLEX_ML_LOG_POLICY": policy}, preexec_fn=_file_size_limit(256 * 1024))
    try:
        body, answers = {"records": [g["record"] for g in golden] * 5}, []
        for _ in range(100):  # bounded: the limit is reached after a few hundred records
            r = s.client.post("/v1/predict", json=body)
            answers.append(r)
            if r.status_code != 200 or r.headers.get("x-prediction-logged") == "false": break
        last, metrics = answers[-1], s.client.get("/metrics").text
        assert "flex_ml_prediction_log_ok 0.0" in metrics, s.output()[-2000:]
        if policy == "fail_closed":
            assert last.status_code == 503 and "prediction log could not be written" in last.json()["detail"], last.text
            assert "flex_ml_log_refusals_total 1.0" in metrics
        else:
            assert last.status_code == 200 and last.headers["x-prediction-logged"] == "false", last.text
            assert f"flex_ml_predictions_unlogged_total {float(len(body['records']))}" in metrics
        ok = {r.json()["request_id"] for r in answers if r.status_code == 200 and "x-prediction-logged" not in r.headers}
        assert ok and s.client.get("/v1/health").status_code == 200
    finally:
        s.stop()
    logged = {r for (r,) in sqlite3.connect(db).execute("select distinct request_id from predictions")}
    assert ok <= logged  # every decision answered as logged is in the log


def _damaged_copy(export: Path, dest: Path, name: str) -> Path:
    shutil.copytree(export, dest)
    p = dest / name
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    return dest


def test_a_damaged_export_does_not_start(export, tmp_path):
    bad = _damaged_copy(export, tmp_path / "bad", "runtime.npz")
    r = subprocess.run([str(BIN / "flex-ml"), "serve", "--model", str(bad), "--port", str(free_port())],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "runtime.npz is" in r.stderr and "truncated" in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_sighup_with_a_damaged_export_logs_why_and_keeps_serving(export, golden, tmp_path):
    served = tmp_path / "served"
    shutil.copytree(export, served)
    s = Server(served)
    try:
        meta = served / "metadata.json"
        meta.write_text(meta.read_text()[:100])  # damaged in place, after the start
        s.proc.send_signal(signal.SIGHUP)
        deadline = time.time() + 30
        while "SIGHUP" not in s.output() and time.time() < deadline: time.sleep(0.1)
        assert "SIGHUP: reload of the served export refused: the export's file metadata.json is" in s.output(), s.output()[-2000:]
        assert "Task exception was never retrieved" not in s.output() and "Traceback" not in s.output()
        assert 'flex_ml_model_reloads_total{outcome="failed"} 1.0' in s.client.get("/metrics").text
        assert s.client.post("/v1/predict", json={"records": [golden[0]["record"]]}).status_code == 200
    finally:
        s.stop()


def _closed_within(sock: socket.socket, seconds: float) -> tuple[bool, bytes]:
    "(whether the server closed `sock` within `seconds`, what it sent before)."
    sock.settimeout(0.2); got, deadline = b"", time.time() + seconds
    while time.time() < deadline:
        try: chunk = sock.recv(65536)
        except socket.timeout: continue
        except ConnectionResetError: return True, got
        if not chunk: return True, got
        got += chunk
    return False, got


def test_slow_and_hostile_clients_are_dropped_and_others_are_served(export, golden):
    s = Server(export, env={"FLEX_ML_HEADER_TIMEOUT": "1", "FLEX_ML_BODY_TIMEOUT": "1", "FLEX_ML_MAX_HEADER_BYTES": "16384"})
    socks = []
    try:
        def connect():
            c = socket.create_connection(("127.0.0.1", s.port), timeout=5); socks.append(c); return c
        slow = [connect() for _ in range(50)]  # slowloris: a header line every 0.3 s, never the end
        for c in slow: c.sendall(b"POST /v1/predict HTTP/1.1\r\nhost: x\r\n")
        chunked = [connect() for _ in range(10)]  # a chunked upload that never sends its last chunk
        for c in chunked: c.sendall(b"POST /v1/predict HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                                    b"transfer-encoding: chunked\r\n\r\n5\r\n{\"rec\r\n")
        big = connect(); big.sendall(b"GET /v1/health HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * (1 << 20) + b"\r\n\r\n")
        t0, latencies = time.time(), []
        with httpx.Client(base_url=s.url, timeout=5) as normal:
            while time.time() - t0 < 2.5:
                for c in slow:
                    try: c.sendall(b"x-slow: 1\r\n")
                    except OSError: pass
                t = time.perf_counter()
                assert normal.post("/v1/predict", json={"records": [golden[0]["record"]]}).status_code == 200
                latencies.append(time.perf_counter() - t); time.sleep(0.3)
        closed = [_closed_within(c, 3) for c in slow + chunked]
        assert all(done for done, _ in closed), f"{sum(not d for d, _ in closed)} of {len(closed)} slow connections still open"
        assert all(b" 408 " in got.split(b"\r\n")[0] for _, got in closed[50:]), closed[50:][:1]
        done, got = _closed_within(big, 3)
        assert done and got.startswith(b"HTTP/1.1 431"), got[:100]
        assert max(latencies) < 0.5, latencies  # normal clients keep being answered promptly meanwhile
        # a large body written with its headers in one go is no header overflow: only the head is limited
        body = json.dumps({"records": [golden[0]["record"]] * 600}).encode()
        assert len(body) > 4 * 16384
        one = connect(); one.sendall(b"POST /v1/predict HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                                     b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body) + body)
        done, got = _closed_within(one, 10)
        assert got.startswith(b"HTTP/1.1 200"), got[:200]
        metrics = s.client.get("/metrics").text
        assert 'flex_ml_connections_dropped_total{reason="slow headers"}' in metrics
    finally:
        for c in socks: c.close()
        s.stop()

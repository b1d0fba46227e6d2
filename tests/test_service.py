"""The prediction service in-process: the `PredictionService` object and the ASGI app around it (starlette's
TestClient, no server), on a small real export (conftest.tiny_project). Damaged exports, the admin switch,
the OpenAPI document checked by schemathesis against the app's answers."""
import asyncio
import json
import shutil
import sqlite3
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from starlette.testclient import TestClient

from flex_ml.bundle import write_manifest
from flex_ml.serve import create_app
from flex_ml.service import PredictionService, ServeSettings

ADMIN = "admin-key-for-tests"


@pytest.fixture(scope="module")
def models(tiny_project, tmp_path_factory) -> Path:
    "A models root holding one export, `model`, with its manifest."
    root = tmp_path_factory.mktemp("models")
    shutil.copytree(tiny_project / "artifacts" / "model", root / "model")
    write_manifest(root / "model")  # already there when export wrote it; rewritten the same
    return root


@pytest.fixture(scope="module")
def golden(models):
    return json.loads((models / "model" / "golden_examples.json").read_text())


@pytest.fixture(scope="module")
def client(models):
    app = create_app(models / "model", ServeSettings(admin_keys=[ADMIN], models_root=str(models)))
    with TestClient(app) as c:
        yield c


def test_the_service_object_scores_and_logs_before_it_answers(models, golden, tmp_path):
    "The public API without HTTP: `answer(raw body)` gives status and body; the decision is in the log when it returns."
    svc = PredictionService(models / "model", ServeSettings(log_db=str(tmp_path / "log.db")))
    svc.start()
    try:
        body = json.dumps({"records": [g["record"] for g in golden], "explain": True, "top_reasons": 2}).encode()
        reply = asyncio.run(svc.answer(body))
        out = reply.json()
        assert reply.status == 200 and len(out["request_id"]) == 32
        assert max(abs(p["score"] - g["expected_score"]) for p, g in zip(out["predictions"], golden)) <= 1e-6
        rows = sqlite3.connect(tmp_path / "log.db").execute(
            "select count(*), min(item), max(item), count(reasons) from predictions where request_id = ?", (out["request_id"],)).fetchone()
        assert rows == (len(golden), 0, len(golden) - 1, len(golden))  # committed before the answer, reasons included
        bad = asyncio.run(svc.answer(json.dumps({"records": [golden[0]["record"] | {"AGE": 130}]}).encode()))
        assert bad.status == 422 and bad.json()["problems"][0]["field"] == "AGE"
    finally:
        svc.close()


def test_every_answer_has_a_request_id_and_no_path_on_disk(client, golden, models):
    r = client.post("/v1/predict", json={"records": [golden[0]["record"]]})
    assert r.status_code == 200 and r.headers["x-request-id"] == r.json()["request_id"]
    for path in ("/v1/health", "/v1/ready", "/v1/model", "/metrics", "/openapi.json", "/v1/nothing"):
        got = client.get(path)
        assert len(got.headers["x-request-id"]) == 32, path
        assert str(models) not in got.text, path  # no endpoint reveals where the export lies
    assert client.get("/metrics").headers["content-type"].startswith("text/plain")
    assert client.get("/v1/predict").status_code == 405 and client.get("/v1/predict").headers["allow"] == "POST"


def test_the_clients_request_id_is_the_logged_one_and_a_bad_one_is_refused(models, golden, tmp_path):
    "A gateway's trace id follows the decision into the audit log; one that cannot be stored safely is a 400."
    app = create_app(models / "model", ServeSettings(log_db=str(tmp_path / "log.db")))
    with TestClient(app) as c:
        r = c.post("/v1/predict", json={"records": [golden[0]["record"]]}, headers={"X-Request-ID": "gw-2026-12-05:abc.1"})
        assert r.status_code == 200 and r.json()["request_id"] == r.headers["x-request-id"] == "gw-2026-12-05:abc.1"
        for bad in ("a b", "x" * 129, "id;drop"):
            refused = c.post("/v1/predict", json={"records": [golden[0]["record"]]}, headers={"X-Request-ID": bad})
            assert refused.status_code == 400 and "X-Request-ID header must be" in refused.json()["detail"], bad
            assert len(refused.headers["x-request-id"]) == 32  # the service's own id, never the refused one
    logged = sqlite3.connect(tmp_path / "log.db").execute("select distinct request_id from predictions").fetchall()
    assert logged == [("gw-2026-12-05:abc.1",)]  # the refused requests were neither scored nor logged


def test_top_reasons_as_a_whole_float_is_accepted(client, golden):
    "JSON Schema counts 18.0 as an integer, as record fields take 29.0 as 29."
    r = client.post("/v1/predict", json={"records": [golden[0]["record"]], "explain": True, "top_reasons": 18.0})
    assert r.status_code == 200, r.text
    assert client.post("/v1/predict", json={"records": [golden[0]["record"]], "top_reasons": 2.5}).status_code == 422


def test_reload_is_closed_without_keys_and_confined_to_the_models_root(models, golden):
    with TestClient(create_app(models / "model", ServeSettings(models_root=str(models)))) as c:
        r = c.post("/v1/admin/reload", json={})
        assert r.status_code == 403 and "reload is disabled" in r.json()["detail"], r.text
    keyed = ServeSettings(api_keys=["client-key"], admin_keys=[ADMIN], models_root=str(models))
    with TestClient(create_app(models / "model", keyed)) as c:
        assert c.post("/v1/admin/reload", json={}, headers={"X-API-Key": "client-key"}).status_code == 401  # not an admin key
        r = c.post("/v1/admin/reload", json={"path": "/etc"}, headers={"X-API-Key": ADMIN})
        assert r.status_code == 403 and "outside the models root" in r.json()["detail"], r.text
        r = c.post("/v1/admin/reload", json={"path": "model/../.."}, headers={"X-API-Key": ADMIN})
        assert r.status_code == 403, r.text
        r = c.post("/v1/admin/reload", json={"path": "model"}, headers={"X-API-Key": ADMIN})  # relative to the root
        assert r.status_code == 200 and r.json()["model_version"] == r.json()["previous_version"], r.text
        spec = c.get("/openapi.json").json()
        assert set(spec["paths"]["/v1/admin/reload"]["post"]["responses"]) >= {"200", "401", "403", "409", "415", "422"}


def failed_reloads(c) -> float:
    line = [l for l in c.get("/metrics").text.splitlines() if l.startswith('flex_ml_model_reloads_total{outcome="failed"}')]
    return float(line[0].split()[-1]) if line else 0.0


def _truncate(p: Path): p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
def _flip(p: Path):
    b = bytearray(p.read_bytes()); b[len(b) // 2] ^= 0xFF; p.write_bytes(bytes(b))


@pytest.mark.parametrize("name,damage,says", [
    ("runtime.npz", _truncate, "runtime.npz is"),
    ("metadata.json", _truncate, "metadata.json is"),
    ("variables/variables.data-00000-of-00001", _truncate, "variables/variables.data-00000-of-00001 is"),
    ("variables/variables.data-00000-of-00001", _flip, "variables/variables.data-00000-of-00001 was altered"),
    ("golden_examples.json", Path.unlink, "golden_examples.json is missing"),
])
def test_a_damaged_export_is_refused_by_name_and_the_old_model_serves(client, models, golden, name, damage, says):
    bad = models / f"bad-{name.replace('/', '_')}-{damage.__name__}"
    shutil.copytree(models / "model", bad)
    damage(bad / name)
    n0 = failed_reloads(client)
    r = client.post("/v1/admin/reload", json={"path": bad.name}, headers={"X-API-Key": ADMIN})
    assert r.status_code == 409 and says in r.json()["detail"] and "Still serving" in r.json()["detail"], r.text
    assert str(models) not in r.text
    assert failed_reloads(client) == n0 + 1
    ok = client.post("/v1/predict", json={"records": [golden[0]["record"]]})
    assert ok.status_code == 200 and abs(ok.json()["predictions"][0]["score"] - golden[0]["expected_score"]) <= 1e-6


@pytest.mark.parametrize("name", ["runtime.npz", "metadata.json"])
def test_an_export_without_a_manifest_is_still_refused_not_a_500(client, models, name):
    "An export written before manifests: damage that shows when read is a 409 too."
    bad = models / f"old-{name}"
    shutil.copytree(models / "model", bad)
    (bad / "manifest.json").unlink()
    _truncate(bad / name)
    r = client.post("/v1/admin/reload", json={"path": bad.name}, headers={"X-API-Key": ADMIN})
    assert r.status_code == 409 and "could not be loaded" in r.json()["detail"], r.text


# The OpenAPI document against the app's answers: schemathesis generates requests from the document, valid
# ones for every operation and invalid ones for those that take a body, and runs all its checks on each
# answer (no 5xx; status code, content type, headers and body as documented; invalid data refused, valid
# data accepted). Its pytest plugin does not run under this pytest, so the operations are looped here.
def test_the_openapi_document_describes_every_answer(models):
    from schemathesis import GenerationMode
    app = create_app(models / "model", ServeSettings(admin_keys=[ADMIN], models_root=str(models), max_batch=20))
    app.service.start()  # schemathesis calls the app without its lifespan
    failures = []
    try:
        api = schemathesis.openapi.from_asgi("/openapi.json", app)
        for op in [r.ok() for r in api.get_all_operations()]:
            modes = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE) if op.method.upper() == "POST" else (GenerationMode.POSITIVE,)
            for mode in modes:
                @given(case=op.as_strategy(mode))
                @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
                def check(case):
                    case.call_and_validate(headers={"X-API-Key": ADMIN} if op.path == "/v1/admin/reload" else None)
                try: check()
                except Exception as e: failures.append(f"{mode.value} {op.label}: {str(e)[:2000]}")
        assert {op.ok().label for op in api.get_all_operations()} == {"POST /v1/predict", "GET /v1/health", "GET /v1/ready",
                                                                     "GET /v1/model", "POST /v1/admin/reload", "GET /metrics"}
    finally:
        app.service.close()
    assert not failures, "\n\n".join(failures)


def test_an_integer_beyond_64_bits_in_a_category_is_answered_and_logged_not_a_500(models, golden, tmp_path):
    "A category field sent as 10**30 (found by the OpenAPI fuzz test): an unknown category to the model, logged as sent."
    svc = PredictionService(models / "model", ServeSettings(log_db=str(tmp_path / "log.db")))
    svc.start()
    try:
        record = golden[0]["record"] | {"EDUCATION": 10**30}
        reply = asyncio.run(svc.answer(json.dumps({"records": [record]}).encode()))
        assert reply.status in (200, 422), reply.json()
        if reply.status == 200:
            logged = sqlite3.connect(tmp_path / "log.db").execute("select record from predictions").fetchone()[0]
            assert json.loads(logged)["EDUCATION"] == 10**30
        else:
            assert reply.json()["problems"][0]["field"] == "EDUCATION"
    finally:
        svc.close()

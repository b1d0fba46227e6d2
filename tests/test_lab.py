"""JupyterLab: a real server on loopback (random port, token) runs every library notebook in nbs/ top to
bottom through its REST and websocket kernel API with the project's "flex-ml" kernel, as a person
would in `make lab`, then shuts down cleanly (POST /api/shutdown, the process exits 0).

Notebooks whose front matter says `skip_exec: true` (report templates, tutorials that need the
pipeline's outputs) are left out, as nbdev_test leaves them out; so are the cells nbdev_test skips
(`#| notest`, `#| slow`, `#| eval: false`)."""
import asyncio
import json
import os
import re
import secrets
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, _free_port

BIN = Path(sys.executable).parent
SKIP_FLAGS = ("notest", "slow")
CELL_TIMEOUT = 600


def _frontmatter(nb) -> dict:
    c = nb["cells"][0] if nb["cells"] else None
    s = "".join(c["source"]).strip() if c and c["cell_type"] == "raw" else ""
    return (yaml.safe_load(s.strip("-")) or {}) if s.startswith("---") and s.endswith("---") else {}


def library_notebooks() -> list[Path]:
    out = []
    for p in sorted((ROOT / "nbs").rglob("*.ipynb")):
        rel = p.relative_to(ROOT / "nbs")
        if any(x.startswith((".", "_")) for x in rel.parts): continue
        if _frontmatter(json.loads(p.read_text())).get("skip_exec"): continue
        out.append(rel)
    return out


def _code_cells(nb) -> list[str]:
    cells = []
    for c in nb["cells"]:
        if c["cell_type"] != "code": continue
        src = "".join(c["source"])
        d = {m.group(1): m.group(2).strip() for m in re.finditer(r"^\s*#\|\s*([\w-]+):?(.*)$", src, re.M)}
        if any(f in d for f in SKIP_FLAGS) or d.get("eval", "").lower() == "false": continue
        cells.append(src)
    return cells


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    "A JupyterLab server on 127.0.0.1 rooted at nbs/: (base url, token, process)."
    port, token = _free_port(), secrets.token_hex(16)
    home = tmp_path_factory.mktemp("jupyter")
    env = dict(os.environ, PATH=f"{BIN}:{os.environ['PATH']}", JUPYTER_CONFIG_DIR=str(home / "config"),
               JUPYTER_RUNTIME_DIR=str(home / "runtime"), DVC_NO_ANALYTICS="1", TF_CPP_MIN_LOG_LEVEL="2")
    log = open(home / "lab.log", "w")
    proc = subprocess.Popen([str(BIN / "jupyter-lab"), "--no-browser", "--ip=127.0.0.1", f"--port={port}",
                             "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
                             f"--ServerApp.root_dir={ROOT / 'nbs'}", "--ServerApp.allow_root=True"],
                            cwd=ROOT / "nbs", env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    import httpx
    for _ in range(240):
        if proc.poll() is not None: break
        try:
            if httpx.get(f"{url}/api/status", headers={"Authorization": f"token {token}"}).status_code == 200: break
        except httpx.HTTPError: pass
        time.sleep(0.25)
    else:
        proc.kill()
    if proc.poll() is not None:
        pytest.fail(f"JupyterLab did not start:\n{(home / 'lab.log').read_text()[-3000:]}")
    try:
        yield url, token, proc
    finally:
        if proc.poll() is None: proc.kill(); proc.wait()
        log.close()


def _msg(session: str, code: str) -> dict:
    return {"header": {"msg_id": uuid.uuid4().hex, "msg_type": "execute_request", "session": session,
                       "username": "test", "version": "5.3", "date": ""},
            "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
            "content": {"code": code, "silent": False, "store_history": True, "user_expressions": {},
                        "allow_stdin": False, "stop_on_error": True}}


async def _run_notebook(url: str, token: str, rel: Path) -> tuple[list[str], int]:
    "Open a session on `rel` with the flex-ml kernel, run its cells over the websocket: (errors, cells run)."
    from tornado.httpclient import AsyncHTTPClient, HTTPRequest
    from tornado.websocket import websocket_connect
    http, auth = AsyncHTTPClient(), {"Authorization": f"token {token}"}
    r = await http.fetch(f"{url}/api/sessions", method="POST", headers=auth, body=json.dumps(
        {"path": rel.as_posix(), "type": "notebook", "name": rel.name, "kernel": {"name": "flex-ml"}}))
    sess = json.loads(r.body)
    assert sess["kernel"]["name"] == "flex-ml"
    kid, session, errors, ran = sess["kernel"]["id"], uuid.uuid4().hex, [], 0
    ws = await websocket_connect(HTTPRequest(f"{url.replace('http', 'ws')}/api/kernels/{kid}/channels?session_id={session}",
                                             headers=auth), max_message_size=256 * 1024 * 1024)
    try:
        for i, code in enumerate(_code_cells(json.loads((ROOT / "nbs" / rel).read_text()))):
            m = _msg(session, code)
            await ws.write_message(json.dumps(m))
            replied = idle = False
            while not (replied and idle):
                raw = await asyncio.wait_for(ws.read_message(), CELL_TIMEOUT)
                if raw is None: raise AssertionError(f"{rel}: the kernel's websocket closed at cell {i}")
                if isinstance(raw, bytes): continue  # binary frames: rich output with buffers
                msg = json.loads(raw)
                if msg.get("parent_header", {}).get("msg_id") != m["header"]["msg_id"]: continue
                t = msg["msg_type"]
                if t == "error":
                    errors.append(f"{rel} cell {i}: {msg['content']['ename']}: {msg['content']['evalue']}\n{code[:300]}")
                elif t == "execute_reply":
                    replied, ran = True, ran + 1
                    if msg["content"]["status"] != "ok" and not errors:
                        errors.append(f"{rel} cell {i}: {msg['content']['status']}\n{code[:300]}")
                elif t == "status" and msg["content"]["execution_state"] == "idle":
                    idle = True
            if errors: break
    finally:
        ws.close()
        await http.fetch(f"{url}/api/sessions/{sess['id']}", method="DELETE", headers=auth)
    return errors, ran


@pytest.mark.slow
def test_notebooks_run_in_jupyterlab_and_server_shuts_down(lab):
    url, token, proc = lab
    nbs = library_notebooks()
    assert len(nbs) >= 10 and Path("00_schema.ipynb") in nbs

    async def main():
        sem = asyncio.Semaphore(2)  # two kernels at a time: the CI machine has two cores
        async def one(rel):
            async with sem: return await _run_notebook(url, token, rel)
        return await asyncio.gather(*(one(rel) for rel in nbs))

    results = asyncio.run(main())
    errors = [e for errs, _ in results for e in errs]
    assert not errors, "\n\n".join(errors)
    for rel, (_, ran) in zip(nbs, results):
        assert ran == len(_code_cells(json.loads((ROOT / "nbs" / rel).read_text()))), rel

    import httpx
    auth = {"Authorization": f"token {token}"}
    assert httpx.get(f"{url}/api/sessions", headers=auth).json() == []
    assert httpx.post(f"{url}/api/shutdown", headers=auth).status_code in (200, 204)
    assert proc.wait(timeout=60) == 0


def test_make_lab_starts_as_root_serves_and_cleans_on_save_without_warnings(tmp_path):
    """Issue 23: `make lab` refused to start as root ("Use --allow-root"), how containers and CI machines
    run, and warned "Overriding existing pre_save_hook (nbdev_clean_jupyter)". Started as the Makefile
    starts it (its `install` step taken as done), it must serve, save a notebook cleaned by nbdev
    (the hook registered once), shut down, and print neither."""
    import httpx, signal
    port, token, name = _free_port(), secrets.token_hex(16), f"_make_lab_check_{secrets.token_hex(4)}.ipynb"
    env = dict(os.environ, PATH=f"{BIN}:{os.environ['PATH']}", JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"),
               JUPYTERLAB_WORKSPACES_DIR=str(tmp_path / "workspaces"))
    log = open(tmp_path / "lab.log", "w+")
    proc = subprocess.Popen(["make", "-o", "install", "lab", f"VENV={BIN.parent}",
                             f"LAB_ARGS=--no-browser --ip=127.0.0.1 --port={port} --ServerApp.port_retries=0 "
                             f"--IdentityProvider.token={token}"],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url, auth = f"http://127.0.0.1:{port}", {"Authorization": f"token {token}"}
    def output(): log.flush(); log.seek(0); return log.read()
    try:
        deadline = time.time() + 180
        while time.time() < deadline and proc.poll() is None:
            try:
                if httpx.get(f"{url}/api/status", headers=auth).status_code == 200: break
            except httpx.HTTPError: pass
            time.sleep(0.5)
        assert proc.poll() is None, f"make lab exited {proc.returncode}:\n{output()[-3000:]}"
        assert httpx.get(f"{url}/api/status", headers=auth).status_code == 200, output()[-3000:]
        nb = {"cells": [{"cell_type": "code", "execution_count": 7, "id": "a1", "metadata": {"scrolled": True},
                         "outputs": [], "source": "1 + 1"}],
              "metadata": {"kernelspec": {"name": "flex-ml", "display_name": "Python (flex-ml)", "language": "python"}},
              "nbformat": 4, "nbformat_minor": 5}
        r = httpx.put(f"{url}/api/contents/{name}", headers=auth, json={"type": "notebook", "format": "json", "content": nb})
        assert r.status_code in (200, 201), r.text
        saved = json.loads((ROOT / "nbs" / name).read_text())["cells"][0]
        assert saved["execution_count"] is None and "scrolled" not in saved["metadata"]  # nbdev cleaned it on save
        assert httpx.post(f"{url}/api/shutdown", headers=auth).status_code in (200, 204)
        assert proc.wait(timeout=60) == 0, output()[-3000:]
    finally:
        (ROOT / "nbs" / name).unlink(missing_ok=True)
        if proc.poll() is None: os.killpg(proc.pid, signal.SIGKILL); proc.wait()
    out = output()
    assert "Running as root is not recommended" not in out and "Overriding existing pre_save_hook" not in out, out[-3000:]

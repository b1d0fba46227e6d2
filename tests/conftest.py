"""Shared fixtures: the repo, the data mirror, and scratch copies of the project for pipeline runs."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def mirror_dir() -> Path:
    "The raw-data mirror: FLEX_ML_DATA_MIRROR, else ../shared/data beside the repo."
    m = os.environ.get("FLEX_ML_DATA_MIRROR") or str(ROOT.parent / "shared" / "data")
    if not Path(m, "credit-default").exists():
        pytest.fail(f"no data mirror at {m}: set FLEX_ML_DATA_MIRROR to a folder laid out like data/")
    return Path(m)


def run(cmd, cwd, check=True, env=None, timeout=900):
    "Run a command with the venv first on PATH; return CompletedProcess (stdout+stderr text)."
    e = dict(os.environ, PATH=f"{BIN}:{os.environ['PATH']}", FLEX_ML_DATA_MIRROR=str(mirror_dir()),
             DVC_NO_ANALYTICS="1", **(env or {}))
    r = subprocess.run(cmd, cwd=cwd, env=e, capture_output=True, text=True, timeout=timeout,
                       shell=isinstance(cmd, str))
    if check and r.returncode != 0:
        raise AssertionError(f"{cmd} exited {r.returncode}\n--- stdout\n{r.stdout[-4000:]}\n--- stderr\n{r.stderr[-4000:]}")
    return r


def project_copy(dest: Path, params: Path | None = None) -> Path:
    """Copy the project's tracked and unignored files (not data/ or artifacts) to `dest`, as a fresh git
    repo with one commit, so DVC and DVCLive see a real repository."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.split()
    for f in files:
        src = ROOT / f
        if not src.is_file() or f.startswith("artifacts/") or f in ("dvc.lock",): continue
        (dest / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest / f)
    if params is not None: shutil.copy(params, dest / "params.yaml")
    for cmd in (["git", "init", "-q", "-b", "main"], ["git", "add", "-A"],
                ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "copy"]):
        subprocess.run(cmd, cwd=dest, check=True, capture_output=True)
    return dest


@pytest.fixture(scope="session")
def credit_schema():
    from flex_ml.schema import load_schema
    return load_schema(ROOT / "schemas" / "credit_default.yaml")


@pytest.fixture(scope="session")
def credit_raw() -> Path:
    return mirror_dir() / "credit-default" / "default_of_credit_card_clients.csv"


@pytest.fixture(scope="session")
def credit_project(tmp_path_factory):
    "A scratch copy of the project after `flex-ml fetch` and `dvc repro` on the credit data: (path, result)."
    p = project_copy(tmp_path_factory.mktemp("credit"))
    run(["flex-ml", "fetch", "--timeout", "5"], p)
    return p, run(["dvc", "repro"], p)


class PostgresServer:
    """A real PostgreSQL server on loopback in a scratch folder (Debian's postgresql package; `make install`
    installs it when missing), run as the `postgres` user when the tests run as root. `stop()` and
    `start()` take it down and bring it back (fault tests); `close()` removes it."""
    def __init__(self):
        import glob, pwd, tempfile
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        if not found: pytest.fail("PostgreSQL is not installed: run `make install` (it installs Debian's postgresql)")
        self.bin_dir = Path(found[-1]).parent
        self.base = Path(tempfile.mkdtemp(prefix="flex-ml-pg-", dir="/tmp"))
        self.as_user = []
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(self.base, pw.pw_uid, pw.pw_gid)
            self.as_user = ["runuser", "-u", "postgres", "--"]
        self.port = _free_port()
        self.url = f"postgresql://flex@127.0.0.1:{self.port}/postgres"
        subprocess.run(self.as_user + [str(self.bin_dir / "initdb"), "-D", str(self.base / "data"), "-A", "trust", "-U", "flex"],
                       check=True, capture_output=True)
        self.start()

    def _pg_ctl(self, *args, check=True):
        return subprocess.run(self.as_user + [str(self.bin_dir / "pg_ctl"), "-D", str(self.base / "data"), *args],
                              check=check, capture_output=True, timeout=120)

    def start(self):
        self._pg_ctl("-l", str(self.base / "log"), "-w", "-o",
                     f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1", "start")

    def stop(self, mode: str = "fast"):
        "`immediate` is a crash as the clients see it: connections cut, no shutdown handshake."
        self._pg_ctl("-m", mode, "-w", "stop", check=False)

    def close(self):
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_url():
    "The URL of a PostgreSQL server shared by the session's tests."
    server = PostgresServer()
    try: yield server.url
    finally: server.close()


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); return s.getsockname()[1]


@pytest.fixture(scope="module")
def browser():
    "Headless Chromium (Debian's, driven by Playwright) for the tests that open a page."
    from playwright.sync_api import sync_playwright
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if not exe: pytest.fail("Chromium is not installed: run `make install` (it installs Debian's chromium)")
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=exe, headless=True, args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


TINY = {"train": {"epochs": 3, "batch_size": 1024, "patience": 3, "teacher_weight": 0.0},
        "baselines": {"gbdt": {"max_iter": 40, "patience": 20}},
        "evaluate": {"bootstrap_resamples": 30}}


def build_tiny_project(dest: Path, raw: Path) -> Path:
    """The stage outputs of a small real model under `dest/artifacts`, laid out as `dvc repro` writes them,
    without a pipeline run: the stage functions themselves on the credit data with params.yaml's values
    but for a few epochs, no teacher, 40 trees and 30 bootstrap resamples (about half a minute). The fast
    tier's service, scoring and monitoring tests run on it; the figures of the real model are the slow tier's."""
    from flex_ml.evaluate import run_evaluate
    from flex_ml.export import run_export
    from flex_ml.params import load_params
    from flex_ml.split import run_split
    from flex_ml.train import run_train
    from flex_ml.validate import run_validate
    p = load_params(ROOT / "params.yaml")
    for section, values in TINY.items():
        for k, v in values.items():
            p[section][k] = {**p[section][k], **v} if isinstance(v, dict) else v
    # laid out as the project is, for verbs run in it: params.yaml, the contract, the raw file under data/
    shutil.copy(ROOT / "params.yaml", dest / "params.yaml"); shutil.copytree(ROOT / "schemas", dest / "schemas")
    (dest / p["dataset"]["raw"]).parent.mkdir(parents=True); (dest / p["dataset"]["raw"]).symlink_to(raw)
    schema, a = ROOT / p["dataset"]["schema"], dest / "artifacts"
    run_validate(raw, schema, a / "validate", **p["validate"])
    run_split(a / "validate" / "accepted.parquet", schema, a / "split", **p["split"])
    run_train(a / "split", schema, a / "train", {k: p[k] for k in ("train", "model", "baselines")})
    run_evaluate(a / "split", a / "train", schema, a / "evaluate", {k: p[k] for k in ("evaluate", "baselines")})
    run_export(a / "train", a / "evaluate", a / "validate", a / "split", schema, raw, a / "model", p)
    return dest


@pytest.fixture(scope="session")
def tiny_project(tmp_path_factory, credit_raw) -> Path:
    "A folder whose `artifacts/` holds every stage output of a small real model (see `build_tiny_project`)."
    return build_tiny_project(tmp_path_factory.mktemp("tiny"), credit_raw)


def pytest_collection_modifyitems(config, items):
    "A `heavy` test is in the slow tier too: `make test-fast` (-m 'not slow') never runs one."
    for item in items:
        if item.get_closest_marker("heavy") and not item.get_closest_marker("slow"):
            item.add_marker(pytest.mark.slow)

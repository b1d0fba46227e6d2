"""The team's DVC remote, for real: moto's S3 server on loopback (with IAM authentication on), the dvc-s3
client, scratch git+DVC repositories. Fast: the remote's error messages, fetch's fallback, a promoted
registry version pushed by the retrain promotion and pulled, verified and scored from a second clone.
Slow: the pipeline pushed from one clone and pulled into another (same bytes, `dvc repro` a no-op), and
the model report passing a comment change and failing a dropped feature."""
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import BIN, ROOT, TINY, _free_port, project_copy, run


@pytest.fixture(scope="module")
def s3():
    """A moto S3 server on a free loopback port, authenticating requests (a wrong key is refused),
    with a bucket `team` and one IAM user's key allowed everything: `{endpoint, key, secret, bucket}`."""
    import boto3, requests
    port = _free_port()
    env = dict(os.environ, INITIAL_NO_AUTH_ACTION_COUNT="3")  # user, key, policy: then every request is checked
    proc = subprocess.Popen([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try: requests.get(endpoint + "/moto-api/", timeout=1); break
            except requests.ConnectionError: time.sleep(0.1)
        else: pytest.fail("moto_server did not start in 10 s")
        kw = dict(endpoint_url=endpoint, region_name="us-east-1")
        iam = boto3.client("iam", aws_access_key_id="setup", aws_secret_access_key="setup", **kw)
        iam.create_user(UserName="ci")
        k = iam.create_access_key(UserName="ci")["AccessKey"]
        iam.put_user_policy(UserName="ci", PolicyName="all", PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
        boto3.client("s3", aws_access_key_id=k["AccessKeyId"], aws_secret_access_key=k["SecretAccessKey"], **kw
                     ).create_bucket(Bucket="team")
        yield dict(endpoint=endpoint, key=k["AccessKeyId"], secret=k["SecretAccessKey"], bucket="team")
    finally:
        proc.terminate(); proc.wait(10)


def creds(s3, key=None, secret=None) -> dict:
    "The environment of a user with the team's key (or another one); no shared AWS config files."
    return dict(AWS_ACCESS_KEY_ID=key or s3["key"], AWS_SECRET_ACCESS_KEY=secret or s3["secret"],
                AWS_CONFIG_FILE="/nonexistent", AWS_SHARED_CREDENTIALS_FILE="/nonexistent")


def no_creds_env() -> dict:
    return {k: v for k, v in os.environ.items() if not k.startswith("AWS_")} | dict(
        AWS_CONFIG_FILE="/nonexistent", AWS_SHARED_CREDENTIALS_FILE="/nonexistent")


def add_remote(repo: Path, s3, prefix: str, endpoint=None, commit=True):
    "The documented setup: `dvc remote add -d team s3://...` and its endpoint, committed (no secret in it)."
    run(["dvc", "remote", "add", "-d", "-f", "team", f"s3://{s3['bucket']}/{prefix}"], repo)
    run(["dvc", "remote", "modify", "team", "endpointurl", endpoint or s3["endpoint"]], repo)
    assert "secret" not in (repo / ".dvc" / "config").read_text()
    if commit: git_commit(repo, "the team remote")


def git_commit(repo: Path, msg: str):
    run(["git", "add", "-A"], repo)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", msg, "--allow-empty"], repo)


def small_repo(path: Path) -> Path:
    "A git+DVC repository with one tracked file and the project's .gitignore."
    path.mkdir(parents=True)
    run(["git", "init", "-q", "-b", "main"], path); run(["dvc", "init", "-q"], path)
    shutil.copy(ROOT / ".gitignore", path / ".gitignore")
    (path / "data").mkdir(); (path / "data" / "a.csv").write_text("x,y\n1,2\n")
    run(["dvc", "add", "-q", "data"], path)
    git_commit(path, "data")
    return path


@pytest.mark.slow
def test_remote_errors_are_one_clear_message(s3, tmp_path):
    "Good key: it answers; none, a wrong key, a wrong secret, a dead endpoint: one message each, with the remedy."
    repo = small_repo(tmp_path / "r")
    add_remote(repo, s3, "errors")
    ok = run(["flex-ml", "remote", "check"], repo, env=creds(s3))
    assert json.loads(ok.stdout)["name"] == "team"
    cases = {"no credentials": (no_creds_env(), "AWS_ACCESS_KEY_ID"),
             "refused the credentials": (dict(os.environ, **creds(s3, key="AKIAWRONGKEY0000")), "may read and write"),
             "refused the credentials ": (dict(os.environ, **creds(s3, secret="not-the-secret")), "may read and write")}
    for what, (env, hint) in cases.items():
        env["PATH"] = f"{BIN}:{env['PATH']}"
        r = subprocess.run(["flex-ml", "remote", "check"], cwd=repo, env=env, capture_output=True, text=True)
        assert r.returncode == 2 and what.strip() in r.stderr and hint in r.stderr, (what, r.stderr)
        assert "Traceback" not in r.stderr and r.stderr.count("flex-ml: error:") == 1
    run(["dvc", "remote", "modify", "team", "endpointurl", f"http://127.0.0.1:{_free_port()}"], repo)
    r = run(["flex-ml", "remote", "pull"], repo, check=False, env=creds(s3))
    assert r.returncode == 2 and "cannot be reached" in r.stderr and "endpointurl" in r.stderr, r.stderr
    r = run(["flex-ml", "remote", "pull", "--if-configured"], repo, check=False, env=creds(s3))
    assert r.returncode == 2, "a configured remote that fails is an error, not a silent retrain"


def test_fetch_says_why_the_remote_failed_then_falls_back(s3, tmp_path):
    "flex-ml fetch keeps its order: the remote (refused here, said once), then the mirror; the data is verified."
    p = project_copy(tmp_path / "p")
    add_remote(p, s3, "fetch")
    r = run(["flex-ml", "fetch", "--no-public"], p, env=creds(s3, key="AKIAWRONGKEY0000"))
    err = r.stderr
    assert err.count("the DVC remote failed") == 1 and "refused the credentials" in err, err
    assert "fetched from mirror" in r.stdout and "verified" in r.stdout


@pytest.mark.slow
def test_promoted_version_is_pushed_and_served_from_another_clone(s3, tmp_path, tiny_project, credit_raw, monkeypatch):
    """The retrain promotion (`record_decision`) records the export in registry/models/VERSION.dvc and
    pushes it; a second clone pulls it with `flex-ml registry pull`, every file verified, and a batch
    job scores from `--model registry:champion`. A changed file is refused."""
    from flex_ml.retrain import record_decision
    a = small_repo(tmp_path / "a")
    add_remote(a, s3, "registry")
    for k, v in (creds(s3) | dict(GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t",
                                  GIT_COMMITTER_EMAIL="t@t", DVC_NO_ANALYTICS="1")).items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("PATH", f"{BIN}:{os.environ['PATH']}")
    d = record_decision(dict(promote=True, candidate=dict(version="v7"), summary="test promotion", checks=[]),
                        a / "registry", tiny_project / "artifacts" / "model")
    assert d["remote"]["pushed"] and d["git"]["committed"], d
    assert (a / "registry/models/v7.dvc").exists() and not list((a / "registry").glob("models/v7/*")) == []
    tracked = run(["git", "ls-files", "registry"], a).stdout.split()
    assert "registry/models/v7.dvc" in tracked and not any(f.startswith("registry/models/v7/") for f in tracked)

    b = tmp_path / "b"
    run(["git", "clone", "-q", str(a), str(b)], tmp_path)
    r = run(["flex-ml", "registry", "pull", "champion"], b, env=creds(s3))
    got = json.loads(r.stdout)
    assert got["version"] == "v7" and got["files"] > 5
    for f in (a / "registry/models/v7").rglob("*"):
        if f.is_file(): assert f.read_bytes() == (b / f.relative_to(a)).read_bytes(), f
    rows = b / "rows.csv"
    rows.write_text("".join(credit_raw.read_text().splitlines(True)[:21]))
    r = run(["flex-ml", "score", str(rows), "--out", str(b / "scores.csv"), "--model", "registry:champion", "--no-progress"], b, env=creds(s3))
    assert "checksums" in r.stderr or "checked against" in r.stderr
    assert len((b / "scores.csv").read_text().splitlines()) == 21

    meta = b / "registry/models/v7/metadata.json"
    meta.write_text(meta.read_text().replace("{", "{ ", 1))
    r = run(["flex-ml", "score", str(rows), "--out", str(b / "s2.csv"), "--model", "registry:v7", "--no-progress"], b,
            check=False, env=creds(s3))
    assert r.returncode == 2 and ("does not match the checksums" in r.stderr or "failed" in r.stderr), r.stderr
    assert not (b / "s2.csv").exists()


# ---- slow: the pipeline through the remote ------------------------------------------------------

def tiny_params(dest: Path) -> Path:
    "params.yaml with conftest.TINY's values: the real pipeline, a few epochs."
    p = yaml.safe_load((ROOT / "params.yaml").read_text())
    for section, values in TINY.items():
        for k, v in values.items():
            p[section][k] = {**p[section][k], **v} if isinstance(v, dict) else v
    dest.write_text(yaml.safe_dump(p, sort_keys=False))
    return dest


def outputs(repo: Path) -> dict:
    "Every file dvc.lock records (outs, cache or not) and its bytes' hash."
    import hashlib
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    files = {}
    for st in lock["stages"].values():
        for o in st.get("outs", []):
            path = repo / o["path"]
            for f in ([path] if path.is_file() else sorted(x for x in path.rglob("*") if x.is_file())):
                files[str(f.relative_to(repo))] = hashlib.sha256(f.read_bytes()).hexdigest()
    return files


@pytest.mark.slow
@pytest.mark.heavy
def test_a_clone_with_the_remote_gets_the_committed_bytes_and_the_report_judges_changes(s3, tmp_path):
    """Clone A runs the pipeline and pushes (data, outputs, run-cache); clone B, with nothing but git
    and the remote, pulls: the same bytes, `dvc status` clean, `dvc repro` runs nothing. Then the model
    report in B: the same model passes, a comment change passes, the repayment-status features dropped fails."""
    import boto3
    a = project_copy(tmp_path / "a", params=tiny_params(tmp_path / "params.yaml"))
    add_remote(a, s3, "pipeline")
    run(["flex-ml", "fetch", "--no-public"], a, env=creds(s3))
    t = time.perf_counter(); run(["dvc", "repro"], a); retrain_s = time.perf_counter() - t
    git_commit(a, "results")
    t = time.perf_counter(); run(["flex-ml", "remote", "push"], a, env=creds(s3)); push_s = time.perf_counter() - t
    objs = boto3.client("s3", endpoint_url=s3["endpoint"], region_name="us-east-1", aws_access_key_id=s3["key"],
                        aws_secret_access_key=s3["secret"]).list_objects_v2(Bucket="team", Prefix="pipeline/")["Contents"]

    b = tmp_path / "b"
    run(["git", "clone", "-q", str(a), str(b)], tmp_path)
    t = time.perf_counter()
    f = run(["flex-ml", "fetch", "--no-public"], b, env=creds(s3))
    assert "pulled from the DVC remote team" in f.stdout, f.stdout + f.stderr
    p = run(["flex-ml", "remote", "pull"], b, env=creds(s3))
    pull_s = time.perf_counter() - t
    assert "`dvc repro` has nothing to do" in p.stdout, p.stdout
    assert outputs(b) == outputs(a)
    assert "up to date" in run(["dvc", "status"], b).stdout
    r = run(["dvc", "repro"], b)
    assert "Running stage" not in r.stdout, r.stdout
    assert run(["git", "status", "--porcelain"], b).stdout.strip() == ""
    print(json.dumps(dict(retrain_s=round(retrain_s, 1), push_s=round(push_s, 1), clone_pull_s=round(pull_s, 1),
                          remote_objects=len(objs), remote_mb=round(sum(o["Size"] for o in objs) / 1e6, 1))))

    same = run(["flex-ml", "model-report", "--base", "main", "--resamples", "200"], b, env=creds(s3))
    assert "PASS (identical)" in same.stdout, same.stdout
    md = (b / "artifacts/model-report/report.md").read_text()
    assert "dvc metrics diff main" in md and (b / "artifacts/model-report/report.html").exists()
    params = b / "params.yaml"
    params.write_text(params.read_text() + "# a comment: nothing a model sees\n")
    assert "Running stage" not in run(["dvc", "repro"], b).stdout
    assert run(["flex-ml", "model-report", "--resamples", "200"], b, env=creds(s3)).returncode == 0

    schema = b / "schemas" / "credit_default.yaml"  # the repayment-status features out of the model
    lines = schema.read_text().splitlines(True)
    drop = [i for i, l in enumerate(lines) if l.lstrip().startswith(("- {name: MAX_DELAY,", "- {name: DELAYED_MONTHS,"))]
    lines = [l for i, l in enumerate(lines) if not any(i == d or (i == d + 1 and "DELAYED" in lines[d]) for d in drop)]
    schema.write_text("".join(l.replace("role: feature", "role: ignored") if l.lstrip().startswith("- {name: PAY_") and "PAY_AMT" not in l
                              else l for l in lines))
    run(["dvc", "repro"], b)
    worse = run(["flex-ml", "model-report", "--resamples", "200"], b, check=False, env=creds(s3))
    assert worse.returncode == 1 and "FAIL (worse)" in worse.stdout, worse.stdout + worse.stderr
    assert "**FAIL" in (b / "artifacts/model-report/report.md").read_text()

"""Team-remote benchmark: the time for a fresh clone to reach a ready model with the team's DVC remote
(pull) against without it (retrain), in the same run, on an S3 server on loopback (moto). Prints one
JSON object (and writes it with --out).

    python benchmarks/remote.py [--out FILE]

Clone A fetches the data and retrains (`flex-ml fetch`, `dvc repro`: what a clone without the remote
does), then pushes data, outputs and run-cache (`flex-ml remote push`). Clone B, with the remote
configured, runs what `make install` and `make repro` run: `flex-ml fetch` (pulls data.dvc),
`flex-ml remote pull`, `dvc repro` (nothing to do). B's outputs are compared byte for byte with A's.
"""
import argparse
import shutil
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def sh(cmd, cwd, env) -> float:
    "Run `cmd`; its wall seconds (exit on failure, with its output)."
    t = time.perf_counter()
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if r.returncode: sys.exit(f"{' '.join(map(str, cmd))} failed:\n{(r.stdout + r.stderr)[-3000:]}")
    return round(time.perf_counter() - t, 2)


def outputs(repo: Path) -> dict:
    "sha256 of every file dvc.lock records as a stage output."
    files = {}
    for st in yaml.safe_load((repo / "dvc.lock").read_text())["stages"].values():
        for o in st.get("outs", []):
            p = repo / o["path"]
            for f in ([p] if p.is_file() else sorted(x for x in p.rglob("*") if x.is_file())):
                files[str(f.relative_to(repo))] = hashlib.sha256(f.read_bytes()).hexdigest()
    return files


def s3_server(port: int):
    "moto's S3 server on loopback with a bucket `team`; the process."
    import boto3, requests
    proc = subprocess.Popen([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        try: requests.get(f"http://127.0.0.1:{port}/moto-api/", timeout=1); break
        except requests.ConnectionError: time.sleep(0.1)
    boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                 aws_access_key_id="bench", aws_secret_access_key="bench").create_bucket(Bucket="team")
    return proc


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, help="also write the JSON here")
    args = ap.parse_args()
    import socket, boto3
    with socket.socket() as s: s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]
    env = dict(os.environ, PATH=f"{BIN}:{os.environ['PATH']}", DVC_NO_ANALYTICS="1",
               AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench")
    env.setdefault("FLEX_ML_DATA_MIRROR", str(ROOT.parent / "shared" / "data"))
    proc = s3_server(port)
    work = Path(tempfile.mkdtemp(prefix="flex-ml-remote-"))
    try:
        a, b = work / "a", work / "b"
        sh(["git", "clone", "-q", str(ROOT), str(a)], work, env)
        without = dict(fetch=sh(["flex-ml", "fetch", "--timeout", "5"], a, env), repro=sh(["dvc", "repro"], a, env))
        for cmd in (["dvc", "remote", "add", "-d", "team", "s3://team/flex-ml"],
                    ["dvc", "remote", "modify", "team", "endpointurl", f"http://127.0.0.1:{port}"],
                    ["git", "add", "-A"], ["git", "-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qm", "bench"]):
            sh(cmd, a, env)
        push = sh(["flex-ml", "remote", "push"], a, env)
        objs = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                            aws_access_key_id="bench", aws_secret_access_key="bench").list_objects_v2(Bucket="team").get("KeyCount")
        sh(["git", "clone", "-q", str(a), str(b)], work, env)
        with_remote = dict(fetch=sh(["flex-ml", "fetch", "--timeout", "5"], b, env), pull=sh(["flex-ml", "remote", "pull"], b, env),
                           repro=sh(["dvc", "repro"], b, env))
        size = sum(f.stat().st_size for f in (a / ".dvc" / "cache").rglob("*") if f.is_file())
        same = outputs(a) == outputs(b)
        status = subprocess.run(["dvc", "status"], cwd=b, env=env, capture_output=True, text=True).stdout.strip()
    finally:
        proc.terminate(); proc.wait(10)
        shutil.rmtree(work, ignore_errors=True)
    result = dict(machine=dict(cpus=os.cpu_count(), python=sys.version.split()[0]),
                  without_remote_seconds=dict(without, total=round(sum(without.values()), 2)),
                  with_remote_seconds=dict(with_remote, total=round(sum(with_remote.values()), 2)),
                  push_seconds=push, pushed_objects=objs, cache_mb=round(size / 1e6, 1),
                  speedup=round(sum(without.values()) / sum(with_remote.values()), 1),
                  pulled_outputs_byte_identical=same, status_after_pull=status)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out: args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()

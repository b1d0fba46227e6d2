"""Deployment files: the Dockerfile and Kubernetes manifests agree with each other and with the app.
No Docker daemon runs here (nor in CI), so the image is checked by what it is made of: the Dockerfile
parsed into its instructions, the packages it installs against what serving really imports, and the
probed paths against the running app."""
import json
import re
import shlex
import subprocess
import sys

import yaml

from conftest import ROOT


def dockerfile() -> list[tuple[str, str]]:
    "The Dockerfile as `(INSTRUCTION, arguments)`, continuation lines joined and comments dropped."
    lines, out = (ROOT / "Dockerfile").read_text().splitlines(), []
    buf = ""
    for line in lines:
        if not buf and (not line.strip() or line.lstrip().startswith("#")): continue
        buf += line.rstrip()[:-1] + " " if line.rstrip().endswith("\\") else line
        if not line.rstrip().endswith("\\"):
            word, _, rest = buf.strip().partition(" ")
            out.append((word.upper(), rest.strip())); buf = ""
    return out


def installed_by_image() -> set[str]:
    "The distributions the image's `pip install` lines name (extras and version pins stripped)."
    names = set()
    for word, args in dockerfile():
        if word == "RUN" and "pip install" in args:
            for tok in shlex.split(args.split("pip install", 1)[1]):
                if tok.startswith("-") or tok in ("requirements.txt", ".") : continue
                names.add(re.split(r"[\[<>=]", tok)[0].lower().replace("_", "-"))
    return names


def manifests():
    return {p.stem: yaml.safe_load(p.read_text()) for p in (ROOT / "deploy" / "k8s").glob("*.yaml")}


def test_dockerfile_serves_the_baked_model():
    ins = dockerfile()
    first = dict(ins)
    assert ins[0][0] == "FROM" and re.fullmatch(r"python:3\.11(-slim)?", ins[0][1])
    assert ("COPY", "artifacts/model ./model") in ins and first["EXPOSE"] == "8000" and first["USER"] == "10001"
    assert json.loads(ins[-1][1]) == ["flex-ml", "serve", "--model", "/app/model", "--host", "0.0.0.0", "--port", "8000"] and ins[-1][0] == "CMD"
    assert [w for w, _ in ins].index("USER") > max(i for i, (w, _) in enumerate(ins) if w == "RUN")  # nothing runs as root after


def test_the_image_installs_what_serving_imports(tiny_project):
    """Start the service's code path on a real export (the CLI, load, verify, score, the app) in a fresh
    interpreter; every third-party package that a flex_ml module it loaded imports (and that was imported)
    must be installed by the image, directly or as a requirement of a package it names. A new import on
    the serving path that the Dockerfile lacks fails here, not in production. (Packages imported only
    because they happen to be installed, such as pandas' optional pyarrow, are not counted.)"""
    code = ("import sys, json, ast, importlib.metadata as md, uvicorn, flex_ml.cli; from flex_ml.serve import create_app; "
            f"app = create_app({str(tiny_project / 'artifacts' / 'model')!r}); "
            "names = set(); "
            "[names.update(a.name.split('.')[0] for n in ast.walk(ast.parse(open(m.__file__).read())) if isinstance(n, ast.Import) for a in n.names) "
            " or names.update(n.module.split('.')[0] for n in ast.walk(ast.parse(open(m.__file__).read())) if isinstance(n, ast.ImportFrom) and n.module and not n.level) "
            # a package's data read with importlib.resources.files("pkg") needs the package as much as an import
            " or names.update(n.args[0].value for n in ast.walk(ast.parse(open(m.__file__).read())) if isinstance(n, ast.Call) and getattr(n.func, 'attr', '') == 'files' and n.args and isinstance(n.args[0], ast.Constant)) "
            " for k, m in list(sys.modules.items()) if k.startswith('flex_ml.') and getattr(m, '__file__', None)]; "
            "dists = md.packages_distributions(); "
            "print(json.dumps(sorted({d for n in names if n in sys.modules for d in dists.get(n, [])})))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-3000:]
    used = set(json.loads(run.stdout.strip().splitlines()[-1]))
    from importlib.metadata import requires
    from packaging.requirements import Requirement
    norm = lambda n: n.lower().replace("_", "-")
    closure, todo = set(), list(installed_by_image())
    while todo:  # what pip brings with the named packages (uvicorn[standard]'s extra included)
        name = todo.pop()
        if name in closure: continue
        closure.add(name)
        try: reqs = requires(name) or []
        except Exception: continue  # named in the Dockerfile, not installed here
        for r in map(Requirement, reqs):
            if r.marker is None or r.marker.evaluate({"extra": "standard"}): todo.append(norm(r.name))
    assert {"numpy", "pyyaml", "uvicorn"} <= {norm(u) for u in used}, used  # the check sees the serving path
    missing = sorted(norm(u) for u in used if norm(u) not in closure and norm(u) != "flex-ml")
    assert not missing, f"serving imports {missing}, which the Dockerfile's pip install does not bring"


def test_deployment_probes_resources_and_ports():
    m = manifests()
    dep = m["deployment"]
    assert dep["kind"] == "Deployment"
    c = dep["spec"]["template"]["spec"]["containers"][0]
    assert c["ports"][0]["containerPort"] == 8000
    assert c["readinessProbe"]["httpGet"]["path"] == "/v1/ready"
    assert c["livenessProbe"]["httpGet"]["path"] == "/v1/health"
    assert c["resources"]["requests"]["cpu"] and c["resources"]["limits"]["memory"]
    assert dep["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > 30  # > graceful shutdown
    assert dep["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert dep["spec"]["selector"]["matchLabels"] == dep["spec"]["template"]["metadata"]["labels"]
    svc, hpa = m["service"], m["hpa"]
    assert svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]
    assert hpa["spec"]["scaleTargetRef"]["name"] == dep["metadata"]["name"]
    assert hpa["spec"]["minReplicas"] >= 2 and hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"


def test_probe_paths_answer_on_the_app(tiny_project):
    "The paths the manifests probe, and the scrape and predict paths, are answered by the app itself (in process)."
    from starlette.testclient import TestClient
    from flex_ml.serve import create_app
    c = manifests()["deployment"]["spec"]["template"]["spec"]["containers"][0]
    with TestClient(create_app(tiny_project / "artifacts" / "model")) as client:
        for probe in ("readinessProbe", "livenessProbe"):
            assert client.get(c[probe]["httpGet"]["path"]).status_code == 200, probe
        assert client.get("/metrics").status_code == 200
        golden = json.loads((tiny_project / "artifacts/model/golden_examples.json").read_text())
        r = client.post("/v1/predict", json={"records": [golden[0]["record"]]})
        assert r.status_code == 200 and abs(r.json()["predictions"][0]["score"] - golden[0]["expected_score"]) < 1e-6


K8S_VERSIONS = ("1.28.0", "1.37.0")  # the oldest Kubernetes the manifests support, and the newest schema shipped


def test_every_manifest_is_valid_for_the_kubernetes_api():
    """Each manifest against the Kubernetes API's published schema (kubernetes-validate, strict: an unknown or
    misspelt field fails, as `kubectl apply --validate=strict` would)."""
    import kubernetes_validate
    found = sorted((ROOT / "deploy" / "k8s").glob("*.yaml"))
    assert {"train-job", "train-workers-service", "score-spark-job"} <= {p.stem for p in found}
    for path in found:
        for version in K8S_VERSIONS:
            try: kubernetes_validate.validate(yaml.safe_load(path.read_text()), version, strict=True)
            except kubernetes_validate.ValidationError as e:
                raise AssertionError(f"{path.name} is not valid Kubernetes {version}: {e.message} at {list(e.path)}") from None


def test_training_pods_tf_config_names_the_headless_service_hosts():
    """The TF_CONFIG each pod of the Indexed Job computes (flex_ml.distribute, from the index Kubernetes sets) lists
    every worker by the DNS name Kubernetes gives it: <job>-<index>.<subdomain>, the subdomain being the headless
    Service that selects these pods, on the port the container and the Service expose."""
    from flex_ml.distribute import worker_cluster
    m = manifests()
    job, svc = m["train-job"], m["train-workers-service"]
    pod = job["spec"]["template"]
    c = pod["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in c["env"]}
    n = int(env["FLEX_ML_WORKERS"])
    assert job["spec"]["completionMode"] == "Indexed" and job["spec"]["completions"] == job["spec"]["parallelism"] == n
    assert svc["spec"]["clusterIP"] == "None" and pod["spec"]["subdomain"] == svc["metadata"]["name"]
    assert svc["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    port = next(p["containerPort"] for p in c["ports"] if p["name"] == svc["spec"]["ports"][0]["targetPort"])
    assert svc["spec"]["ports"][0]["port"] == port
    hosts = [f"{job['metadata']['name']}-{i}.{svc['metadata']['name']}:{port}" for i in range(n)]
    for i in range(n):
        assert worker_cluster("multi_worker", {**env, "JOB_COMPLETION_INDEX": str(i)}) == {"workers": hosts, "index": i}
    assert c["command"][:2] == ["flex-ml", "train"] and c["command"][-2:] == ["--distribute", "multi_worker"]

"""Deployment files: the Dockerfile and Kubernetes manifests agree with each other and with the app."""
import re

import yaml

from conftest import ROOT


def manifests():
    return {p.stem: yaml.safe_load(p.read_text()) for p in (ROOT / "deploy" / "k8s").glob("*.yaml")}


def test_dockerfile_serves_the_baked_model():
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11", text, re.M)
    assert "COPY artifacts/model ./model" in text and "EXPOSE 8000" in text
    cmd = re.search(r'^CMD (\[.*\])$', text, re.M).group(1)
    assert yaml.safe_load(cmd) == ["flex-ml", "serve", "--model", "/app/model", "--host", "0.0.0.0", "--port", "8000"]
    assert "USER 10001" in text


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


def test_probe_paths_exist_in_the_app():
    "The probed paths are routes of the service (read from the generated code, without loading a model)."
    src = (ROOT / "flex_ml" / "serve.py").read_text()
    for path in ("/v1/ready", "/v1/health", "/metrics", "/v1/predict"):
        assert f'"{path}"' in src

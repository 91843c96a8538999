"""Deployment files: the Kubernetes/KServe manifests, compose file and Dockerfile say what the service needs."""

import re

import pytest
import yaml

from .conftest import REPO


def documents(name: str) -> dict[str, dict]:
    return {doc["kind"]: doc for doc in yaml.safe_load_all((REPO / "deploy" / name).read_text()) if doc}


def test_deployment_runs_replicas_with_probes_limits_and_the_image():
    docs = documents("kubernetes.yaml")
    deployment, service = docs["Deployment"], docs["Service"]
    spec = deployment["spec"]
    assert spec["replicas"] >= 2
    pod = spec["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    [container] = pod["containers"]
    assert container["image"].startswith("openset:")
    port = {p["name"]: p["containerPort"] for p in container["ports"]}["http"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["OPENSET_PORT"] == str(port)
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["port"] in ("http", port)
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])
    assert {"cpu", "memory"} <= set(container["resources"]["limits"])
    assert service["spec"]["selector"] == spec["selector"]["matchLabels"] == spec["template"]["metadata"]["labels"]
    assert service["spec"]["ports"][0]["targetPort"] == "http"


def test_kserve_inference_service_uses_the_custom_container_and_v2_probes():
    isvc = documents("kserve.yaml")["InferenceService"]
    assert isvc["apiVersion"].startswith("serving.kserve.io/")
    predictor = isvc["spec"]["predictor"]
    assert predictor["minReplicas"] >= 2
    [container] = predictor["containers"]
    port = container["ports"][0]["containerPort"]
    assert {e["name"]: e["value"] for e in container["env"]}["OPENSET_PORT"] == str(port)
    assert container["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": port}
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"


def test_compose_builds_the_serving_target():
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    service = compose["services"]["openset"]
    assert service["build"]["target"] == "serve"
    assert "OPENSET_PORT" in service["environment"]


@pytest.mark.parametrize("needle", [
    r"^FROM python:3\.11-slim AS serve$",
    r"^USER 10001$",
    r"^HEALTHCHECK .*\n?.*/v2/health/ready",
    r'^CMD \["openset-serve"\]$',
    r"pip install -c constraints\.txt \"\.\[serve\]\"",  # the tested versions (constraints.txt)
])
def test_dockerfile_serving_stage(needle):
    assert re.search(needle, (REPO / "Dockerfile").read_text(), re.MULTILINE)

"""Fuzzing against the API contract: schemathesis over the service's own OpenAPI schema.

Every operation of the schema, with data generated from it (valid and invalid), is sent through the
ASGI app in process (the lifespan loads the shipped model). All of schemathesis' default checks run:
no 5xx; status codes, content types, headers and bodies as documented; schema-valid requests accepted
and schema-invalid ones rejected with a 4xx. Three runs: an app without an API key, one with a key
(sent), and the same keyed app without the key, where every secured operation must answer 401.

Reproducible: a fixed seed and derandomised hypothesis. The example budget keeps the file well under
two minutes on two cores; raise MAX_EXAMPLES (or change SEED) locally for a deeper search.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import strategies as st
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import positive_data_acceptance

from service.main import create_app
from service.preprocess import MEDIA_TYPES
from service.settings import Settings

MODEL_DIR = Path(__file__).resolve().parents[1] / "models" / "mnist-0to4"
SERVED = json.loads((MODEL_DIR / "model.json").read_text())
API_KEY, ADMIN_KEY = "fuzz-api-key", "fuzz-admin-key"
SECURED = ("/v1/", "/v2/models", "/admin/")
SEED = 20240601
# Generated examples per operation (the examples and coverage phases add their own, fixed, cases).
MAX_EXAMPLES, KEYLESS_MAX_EXAMPLES = 100, 25


def fuzz_config(max_examples: int, parameters: dict | None = None) -> SchemathesisConfig:
    return SchemathesisConfig.from_dict({
        "seed": SEED,
        "generation": {"max-examples": max_examples, "deterministic": True, "database": "none"},
        "parameters": parameters or {},
    })


def make_app(api_key: str | None = None):
    # admin_key mounts the admin API where Settings has it (ignored otherwise): fuzzed like the rest.
    return create_app(Settings(model_dir=MODEL_DIR, api_key=api_key, admin_key=ADMIN_KEY if api_key else None,
                               log_level="critical"))


# Loaded at import: schemathesis' lazy `from_fixture` sets the test node's private `_nodeid`, which
# pytest 9.2 no longer has. Loading through ASGI runs the lifespan: each app loads the model once.
# The open run addresses the served model in every phase, so that all v2 bodies reach the parser; the
# keyed runs also send other names and versions (404s), see `aim_at_the_served_model`.
keyed_app = make_app(API_KEY)
open_api = schemathesis.openapi.from_asgi("/openapi.json", make_app(), config=fuzz_config(
    MAX_EXAMPLES, parameters={"path.name": SERVED["name"], "path.version": str(SERVED["version"])}))
keyed_api = schemathesis.openapi.from_asgi("/openapi.json", keyed_app, config=fuzz_config(MAX_EXAMPLES))
keyless_api = schemathesis.openapi.from_asgi("/openapi.json", keyed_app, config=fuzz_config(KEYLESS_MAX_EXAMPLES))
# Raw image bodies are bytes whatever the image type (schemathesis knows only some of the names).
schemathesis.serializer.alias(sorted(MEDIA_TYPES), "application/octet-stream")


@keyed_api.hook("before_generate_path_parameters")
def aim_at_the_served_model(context, strategy):
    """Random names (404s), the served model's name with a random version, or both the served name
    and version (in the generated phases: the coverage phase takes no hooks)."""

    def served(*keys):
        return lambda params: params and {**params, **{k: str(SERVED[k]) for k in keys if k in params}}

    return st.one_of(strategy, strategy.map(served("name")), strategy.map(served("name", "version")))


def with_matching_data(case):
    """A schema-valid v2 inference request, made to hold exactly the values its shape asks for."""
    if (case.meta is None or not case.meta.generation.mode.is_positive or not case.path.endswith("/infer")
            or not isinstance(case.body, dict)):
        return case
    body = copy.deepcopy(case.body)
    try:
        tensor = body["inputs"][0]
        shape = [min(int(tensor["shape"][0]), 3), *tensor["shape"][1:]]
        top = 1.0 if str(tensor["datatype"]).startswith("FP") else 255
    except (KeyError, IndexError, TypeError, ValueError):
        return case
    tensor.update(shape=shape, data=[(i * 37 % 256) * top / 255 for i in range(math.prod(shape))])
    if isinstance(tensor.get("parameters"), dict):
        tensor["parameters"].pop("binary_data_size", None)
    case.body = body
    if case.headers:  # no binary part follows the JSON
        case.headers = {k: v for k, v in case.headers.items() if k.lower() != "inference-header-content-length"}
    return case


def complete_the_tensor(context, strategy):
    """Half of the v2 inference requests get a complete tensor (see `content_beyond_the_schema`), so
    that accepted requests and their responses, JSON or binary outputs, are checked too."""
    return st.one_of(strategy, strategy.map(with_matching_data))


for _schema in (open_api, keyed_api):
    _schema.hook("before_generate_case")(complete_the_tensor)

BINARY_MEDIA = {*MEDIA_TYPES, "multipart/form-data", "application/octet-stream"}


def content_beyond_the_schema(case) -> bool:
    """Requests whose validity JSON Schema cannot express, so that schema-valid ones may rightly be
    refused, and `positive_data_acceptance` does not apply to them:
    - image uploads (multipart, raw image/* or octet-stream bodies): ``format: binary`` admits any bytes,
      and bytes that are not a decodable PNG/JPEG/BMP/WebP/GIF are a 400 (or a 415 for another format);
    - v2 inference: a tensor's ``data`` must hold exactly prod(``shape``) values (or ``binary_data_size``
      must match the binary part after a JSON header of the declared length): relations between fields.
    Every other check still runs on them, and `rejected_for_its_content` replaces the one left out."""
    return case.media_type in BINARY_MEDIA or case.path.endswith("/infer")


def rejected_for_its_content(ctx, response, case) -> None:
    """A schema-valid request that is refused gets a client error and the service's error body."""
    if case.meta is None or not case.meta.generation.mode.is_positive or response.status_code < 400:
        return
    assert response.status_code in {400, 401, 404, 413, 415, 422}, \
        f"schema-valid request refused with {response.status_code}"
    assert response.json()["error"], "a refusal names its reason"


def call_and_validate(case, **kwargs):
    if content_beyond_the_schema(case):
        kwargs.update(excluded_checks=[positive_data_acceptance], additional_checks=[rejected_for_its_content])
    return case.call_and_validate(**kwargs)


@open_api.parametrize()
def test_open_api_honours_its_schema(case):
    call_and_validate(case)


@keyed_api.parametrize()
def test_keyed_api_honours_its_schema(case):
    call_and_validate(case, headers={"X-API-Key": ADMIN_KEY if case.path.startswith("/admin/") else API_KEY})


@keyless_api.parametrize()
def test_keyed_api_without_the_key_answers_401(case):
    response = call_and_validate(case)
    # (The coverage phase also sends other methods to each path: those are 405s, whoever asks.)
    if case.path.startswith(SECURED) and case.method.upper() == case.operation.method.upper():
        assert response.status_code == 401, f"{case.method} {case.formatted_path} without a key: {response.status_code}"
        assert response.headers.get("www-authenticate") == ["Bearer"] and response.json()["error"]


# What the fuzzing found, pinned (each was answered differently before the fix).
INFER = f"/v2/models/{SERVED['name']}/infer"
HUGE = [10**6, 28, 28]  # a batch far over the limit: a 413, once the request is well formed
FINDINGS = {
    "v1 pixels: booleans were taken as numbers": ("/v1/predict", {"image": [[True] * 28] * 28}, 422),
    "v1 pixels: numeric strings were taken as numbers": ("/v1/predict", {"image": [["1"] * 28] * 28}, 422),
    "v2: a list as datatype was a 500": (INFER, {"inputs": [
        {"name": "image", "datatype": [], "shape": [1, 28, 28], "data": [0.0] * 784}]}, 422),
    "v2: bad data hid behind the batch limit": (INFER, {"inputs": [
        {"name": "image", "datatype": "FP32", "shape": HUGE, "data": [None]}]}, 400),
    "v2: a negative binary_data_size hid behind the batch limit": (INFER, {"inputs": [
        {"name": "image", "datatype": "FP32", "shape": HUGE, "parameters": {"binary_data_size": -1}}]}, 400),
    "v2: bad outputs hid behind the batch limit": (INFER, {"outputs": [{"binary_data": True}], "inputs": [
        {"name": "image", "datatype": "FP32", "shape": HUGE, "data": [0.0]}]}, 400),
    "v2: JSON Schema's integers include 1.0": (INFER, {"inputs": [
        {"name": "image", "datatype": "FP32", "shape": [1.0, 28, 28], "data": [0.0] * 784}]}, 200),
    "v2: the batch limit still applies": (INFER, {"inputs": [
        {"name": "image", "datatype": "FP32", "shape": [300, 28, 28], "data": [0.0] * 784 * 300}]}, 413),
}


@pytest.fixture(scope="module")
def client():
    with TestClient(make_app()) as c:
        yield c


@pytest.mark.parametrize("path, body, status", FINDINGS.values(), ids=FINDINGS.keys())
def test_fuzz_findings_stay_fixed(client, path, body, status):
    response = client.post(path, json=body)
    assert response.status_code == status, response.text
    assert status == 200 or response.json()["error"]


def test_fuzz_finding_data_and_binary_data_together_are_refused(client):
    """They were: ``data`` was ignored next to ``binary_data_size`` (hidden behind the 413 as well)."""
    head = json.dumps({"inputs": [{"name": "image", "datatype": "FP32", "shape": [1, 28, 28], "data": [0.0] * 784,
                                   "parameters": {"binary_data_size": 784 * 4}}]}).encode()
    response = client.post(INFER, content=head + bytes(784 * 4), headers={"Inference-Header-Content-Length":
                                                                          str(len(head))})
    assert response.status_code == 400 and "not both" in response.json()["error"]


def test_every_operation_documents_its_error_answers():
    """Found first: v2 model operations answered 404 (and 401, 4xx on bad tensors) undocumented, and
    documented FastAPI's 422 body, which the service never sends."""
    schema = keyed_app.openapi()
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            for code, answer in operation["responses"].items():
                if code.startswith("4") or code.startswith("5"):
                    ref = answer["content"]["application/json"]["schema"]["$ref"]
                    assert ref.endswith("/ErrorResponse"), (method, path, code)
            if path.startswith(SECURED):
                assert "401" in operation["responses"], (method, path)

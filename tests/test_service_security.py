"""Security basics: keys compared in constant time and never logged, request ids in every log line."""

import json
import logging

import numpy as np
import pytest
from fastapi.testclient import TestClient

import service.guards
from service.main import create_app
from service.observability import JsonFormatter
from service.settings import Settings

USER_KEY, ADMIN_KEY = "user-key-0123456789", "admin-key-9876543210"
DIGIT = {"image": (np.eye(28) * 255).tolist()}


@pytest.fixture
def client(shipped_model_dir):
    app = create_app(Settings(model_dir=shipped_model_dir, api_key=USER_KEY, admin_key=ADMIN_KEY))
    with TestClient(app) as test_client:
        yield test_client


def test_keys_are_compared_with_hmac_compare_digest(client, monkeypatch):
    calls = []

    def spy(given, expected):
        calls.append((given, expected))
        return given == expected

    monkeypatch.setattr(service.guards.hmac, "compare_digest", spy)
    assert client.post("/v1/predict", json=DIGIT, headers={"X-API-Key": "guess"}).status_code == 401
    assert client.post("/v1/predict", json=DIGIT, headers={"X-API-Key": USER_KEY}).status_code == 200
    assert client.post("/admin/reload", headers={"Authorization": f"Bearer {ADMIN_KEY}"}).status_code == 200
    assert calls == [(b"guess", USER_KEY.encode()), (USER_KEY.encode(), USER_KEY.encode()),
                     (ADMIN_KEY.encode(), ADMIN_KEY.encode())]


def test_keys_are_never_logged_and_every_access_line_has_a_request_id(client, caplog):
    with caplog.at_level(logging.DEBUG):
        client.post("/v1/predict", json=DIGIT, headers={"X-API-Key": USER_KEY})
        client.post("/v1/predict", json=DIGIT, headers={"X-API-Key": USER_KEY + "x"})
        client.post("/admin/reload", headers={"X-API-Key": ADMIN_KEY})
        client.post("/admin/reload", headers={"Authorization": f"Bearer {ADMIN_KEY}x"})
        client.get(f"/v2/health/ready?key={USER_KEY}")  # a careless client: query strings are not logged
    # The server's loggers only (httpx, the test's client, logs its own request lines).
    lines = [JsonFormatter().format(r) for r in caplog.records if r.name.startswith(("openset", "uvicorn"))]
    assert USER_KEY not in "\n".join(lines) and ADMIN_KEY not in "\n".join(lines)
    access = [json.loads(JsonFormatter().format(r)) for r in caplog.records if r.name == "openset.access"]
    assert len(access) == 5 and all(len(line["request_id"]) >= 16 for line in access)

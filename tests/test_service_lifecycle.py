"""Model lifecycle: hot reload (admin endpoint and SIGHUP), refusal of broken replacements, graceful shutdown."""

import json
import signal
import socket
import threading
import time

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from onnx import TensorProto, helper

from openset.artifacts import atomic_write_bytes, atomic_write_json, sha256_file
from service.main import create_app
from service.settings import Settings

from .conftest import running_server

ADMIN = {"X-API-Key": "admin-secret"}
DIGIT = {"image": (np.eye(28) * 255).tolist()}


@pytest.fixture
def model_dir(model_copy):
    return model_copy


def set_version(folder, version: str) -> None:
    meta = json.loads((folder / "model.json").read_text())
    atomic_write_json(folder / "model.json", {**meta, "version": version})


def served_version(response) -> str:
    return response.headers["x-model-version"]


@pytest.fixture
def client(model_dir):
    app = create_app(Settings(model_dir=model_dir, admin_key="admin-secret"))
    with TestClient(app) as test_client:
        yield test_client


def test_every_response_names_the_served_model(client):
    for response in (client.post("/v1/predict", json=DIGIT), client.get("/v2/health/ready"), client.get("/metrics"),
                     client.get("/nowhere"), client.post("/v1/predict", json={"image": [[1]]})):
        assert served_version(response) == "mnist-0to4/0.1.0+seed0"
    assert 'version="0.1.0+seed0"' in client.get("/metrics").text


def test_reload_swaps_the_model_and_the_metrics_follow(client, model_dir):
    set_version(model_dir, "2")
    response = client.post("/admin/reload", headers=ADMIN)
    assert response.status_code == 200, response.text
    assert response.json() == {"models": [{"model": "mnist-0to4/2", "sha256": sha256_file(model_dir / "model.onnx")}]}
    answer = client.post("/v1/predict", json=DIGIT)
    assert served_version(answer) == "mnist-0to4/2" and answer.json()["model"]["version"] == "2"
    metrics = client.get("/metrics").text
    assert 'version="2"' in metrics and 'version="0.1.0+seed0"' not in metrics
    assert 'openset_model_reloads_total{model="mnist-0to4",result="ok"} 1.0' in metrics


def contract_breaking_graph(path) -> None:
    """A valid ONNX graph with the right input but none of the contract's outputs."""
    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, 28, 28])
    out = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 1, 28, 28])
    graph = helper.make_graph([helper.make_node("Identity", ["image"], ["logits"])], "wrong", [image], [out])
    atomic_write_bytes(path, helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
                       .SerializeToString())


@pytest.mark.parametrize("breakage, reason", [
    ("garbage onnx", "SHA-256"),
    ("garbage onnx, matching sha", "model.onnx"),
    ("wrong outputs", "model.onnx"),
    ("unreadable json", "not JSON"),
    ("missing onnx", "missing"),
    ("a newer format", "format_version 3"),
])
def test_a_broken_replacement_is_refused_and_the_old_model_keeps_serving(client, model_dir, breakage, reason):
    onnx_path, meta_path = model_dir / "model.onnx", model_dir / "model.json"
    meta = json.loads(meta_path.read_text())
    if breakage.startswith("garbage onnx"):
        onnx_path.write_bytes(b"\x08\x01 not a graph")
    elif breakage == "wrong outputs":
        contract_breaking_graph(onnx_path)
    elif breakage == "unreadable json":
        meta_path.write_text("{")
    elif breakage == "a newer format":
        atomic_write_json(meta_path, {**meta, "format_version": 3})
    else:
        onnx_path.unlink()
    if breakage.endswith("matching sha") or breakage == "wrong outputs":
        atomic_write_json(meta_path, {**meta, "onnx_sha256": sha256_file(onnx_path), "version": "broken"})
    response = client.post("/admin/reload", headers=ADMIN)
    assert response.status_code == 409
    assert "still serving mnist-0to4/0.1.0+seed0" in response.json()["error"] and reason in response.json()["error"]
    answer = client.post("/v1/predict", json=DIGIT)
    assert answer.status_code == 200 and served_version(answer) == "mnist-0to4/0.1.0+seed0"
    assert client.get("/v2/health/ready").status_code == 200
    assert 'openset_model_reloads_total{model="model",result="refused"} 1.0' in client.get("/metrics").text


def test_the_admin_api_needs_its_own_key(model_dir):
    with TestClient(create_app(Settings(model_dir=model_dir, api_key="user-key", admin_key="admin-secret"))) as c:
        assert c.post("/admin/reload").status_code == 401
        assert c.post("/admin/reload", headers={"X-API-Key": "user-key"}).status_code == 401
        assert c.post("/admin/reload", headers=ADMIN).status_code == 200
    with TestClient(create_app(Settings(model_dir=model_dir))) as c:
        assert c.post("/admin/reload", headers=ADMIN).status_code == 404  # not mounted without an admin key


def hammer(url: str, stop: threading.Event, results: list, clients: int = 8) -> list[threading.Thread]:
    """``clients`` threads posting digits until ``stop``; appends (status, model version) per response."""

    def worker() -> None:
        with httpx.Client(base_url=url, timeout=10) as http:
            while not stop.is_set():
                try:
                    response = http.post("/v1/predict", json=DIGIT)
                    results.append((response.status_code, response.headers.get("x-model-version")))
                except httpx.HTTPError as err:
                    results.append((type(err).__name__, None))

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for thread in threads:
        thread.start()
    return threads


def test_hot_reload_under_load_fails_no_request(model_dir):
    with running_server(model_dir, admin_key="admin-secret") as (url, process):
        stop, results = threading.Event(), []
        threads = hammer(url, stop, results)
        try:
            for version in ("2", "3", "4"):
                time.sleep(0.5)
                set_version(model_dir, version)
                assert httpx.post(f"{url}/admin/reload", headers=ADMIN, timeout=30).status_code == 200
            # A broken replacement under load: refused, and nobody notices.
            (model_dir / "model.onnx").write_bytes(b"broken")
            assert httpx.post(f"{url}/admin/reload", headers=ADMIN, timeout=30).status_code == 409
            time.sleep(0.5)
        finally:
            stop.set()
            for thread in threads:
                thread.join()
        statuses = {status for status, _ in results}
        versions = [version for _, version in results]
        assert statuses == {200}, f"failed requests during reloads: {statuses}"
        assert len(results) > 100
        assert versions[-1] == "mnist-0to4/4"
        assert {"mnist-0to4/0.1.0+seed0", "mnist-0to4/4"} <= set(versions)
        assert "admin-secret" not in process.log.read_text()  # the key is never logged


def test_sighup_reloads_the_model(model_dir):
    with running_server(model_dir) as (url, process):
        set_version(model_dir, "from-sighup")
        process.send_signal(signal.SIGHUP)
        for _ in range(100):
            if served_version(httpx.get(f"{url}/v2/health/ready")) == "mnist-0to4/from-sighup":
                break
            time.sleep(0.1)
        else:
            pytest.fail("SIGHUP did not reload the model")
        assert process.poll() is None


def test_sigterm_lets_in_flight_requests_finish_and_refuses_new_ones(model_dir):
    body = json.dumps(DIGIT).encode()
    with running_server(model_dir) as (url, process):
        port = int(url.rsplit(":", 1)[1])
        # An in-flight request: headers and half of the body sent when SIGTERM arrives.
        slow = socket.create_connection(("127.0.0.1", port))
        slow.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n" % len(body) + body[: len(body) // 2])
        time.sleep(0.3)
        process.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        with pytest.raises(httpx.ConnectError):  # the listening socket is closed: new clients are refused
            httpx.get(f"{url}/v2/health/live", timeout=2)
        assert process.poll() is None  # still draining
        slow.sendall(body[len(body) // 2 :])
        slow.settimeout(10)
        response = b""
        while chunk := slow.recv(65536):
            response += chunk
        slow.close()
        assert response.startswith(b"HTTP/1.1 200"), response[:200]
        assert b'"label"' in response
        # uvicorn re-raises the signal once drained, so the exit status says "terminated by SIGTERM".
        assert process.wait(timeout=15) in (0, -signal.SIGTERM)


def scraped(url: str, name: str) -> float:
    """The sum of a metric's samples over its labels in one scrape of /metrics."""
    text = httpx.get(f"{url}/metrics").text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(f"{name}{{") or line.startswith(f"{name} "))


@pytest.mark.parametrize("given_dir", [True, False], ids=["PROMETHEUS_MULTIPROC_DIR set", "a directory of its own"])
def test_with_two_workers_every_scrape_counts_every_worker(model_dir, tmp_path, monkeypatch, given_dir):
    if given_dir:  # as a deployment may set it
        monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    else:
        monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    with running_server(model_dir, workers="2") as (url, process):
        for _ in range(40):  # a new connection each, so both workers answer some
            assert httpx.post(f"{url}/v1/predict", json=DIGIT).status_code == 200
        if given_dir:
            workers = {path.stem.rsplit("_", 1)[1] for path in tmp_path.glob("counter_*.db")}
            assert len(workers) == 2  # both answered requests...
        for _ in range(6):  # ...and whichever of them answers a scrape counts them all
            assert scraped(url, "openset_predictions_total") == 40
        info = [line for line in httpx.get(f"{url}/metrics").text.splitlines()
                if line.startswith("openset_model_info{")]
        assert len(info) == 1 and info[0].endswith(" 1.0")

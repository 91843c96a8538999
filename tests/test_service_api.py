"""The REST API end to end in process (FastAPI's TestClient) on the shipped model."""

import gzip
import io
import json

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from openset.data import load_dataset
from service.main import create_app
from service.settings import Settings


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array.astype(np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def samples(data_dir, shipped_runtime):
    """One test digit per known class that the model accepts (5 % of knowns are rejected by design)."""
    test = load_dataset("mnist", train=False, root=data_dir)
    labels = test.labels
    chosen = []
    for digit in range(5):
        candidates = np.nonzero(labels == digit)[0][:20]
        decided = shipped_runtime.predict(test.images[candidates])
        chosen.append(next(i for i, p in zip(candidates, decided, strict=True) if p.label == str(digit)))
    return test.images[chosen, 0], [str(d) for d in range(5)]


@pytest.fixture(scope="module")
def client(shipped_model_dir):
    with TestClient(create_app(Settings(model_dir=shipped_model_dir, max_batch=8))) as c:
        yield c


@pytest.fixture(scope="module")
def secured(shipped_model_dir):
    with TestClient(create_app(Settings(model_dir=shipped_model_dir, api_key="s3cret"))) as c:
        yield c


def test_predict_json_array(client, samples):
    images, labels = samples
    body = client.post("/v1/predict", json={"image": (images[3] * 255).tolist()}).json()
    assert body["label"] == labels[3] and body["known"] is True
    scores = body["scores"]
    assert set(scores["probs"]) == set(labels) and sum(scores["probs"].values()) == pytest.approx(1, abs=1e-5)
    assert scores["score"] >= scores["threshold"]
    assert body["model"]["name"] == "mnist-0to4"


def test_predict_multipart_and_raw_body_agree(client, samples):
    images, labels = samples
    data = png(255 - images[2] * 255)  # black on white: inverted by preprocessing
    multipart = client.post("/v1/predict", files={"file": ("d.png", data, "image/png")}).json()
    raw = client.post("/v1/predict", content=data, headers={"content-type": "image/png"}).json()
    assert multipart == raw
    assert multipart["label"] == labels[2]


def test_noise_is_other(client):
    noise = np.random.default_rng(0).integers(0, 256, (28, 28))
    body = client.post("/v1/predict", json={"image": noise.tolist()}).json()
    assert body["label"] == "other" and body["known"] is False
    assert body["scores"]["score"] < body["scores"]["threshold"]


def test_batch_answers_in_order_both_encodings(client, samples):
    images, labels = samples
    order = [4, 0, 3, 1, 2]
    as_json = client.post("/v1/predict/batch", json={"images": [(images[i] * 255).tolist() for i in order]}).json()
    assert [p["label"] for p in as_json["predictions"]] == [labels[i] for i in order]
    files = [("files", (f"{i}.png", png(images[i] * 255), "image/png")) for i in order]
    as_files = client.post("/v1/predict/batch", files=files).json()
    assert [p["label"] for p in as_files["predictions"]] == [labels[i] for i in order]


def test_v2_health_and_metadata(client):
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json() == {"ready": True}
    assert "binary_tensor_data" in client.get("/v2").json()["extensions"]
    meta = client.get("/v2/models/mnist-0to4").json()
    assert meta["inputs"][0] == {"name": "image", "datatype": "FP32", "shape": [-1, 1, 28, 28]}
    assert [o["name"] for o in meta["outputs"]] == ["logits", "probs", "known_prob", "distance", "score",
                                                    "label"]
    assert client.get("/v2/models/mnist-0to4/ready").json()["ready"] is True
    assert client.get("/v2/models/nope").status_code == 404
    assert "error" in client.get("/v2/models/nope").json()


def test_v2_infer_json_uint8_echoes_id_and_honours_outputs(client, samples):
    images, labels = samples
    request = {"id": "abc-1", "parameters": {"whatever": 1},
               "inputs": [{"name": "image", "shape": [2, 1, 28, 28], "datatype": "UINT8",
                           "data": (images[[1, 4]] * 255).round().astype(int).ravel().tolist()}],
               "outputs": [{"name": "label"}, {"name": "score"}]}
    # No Content-Type, as tritonclient sends it.
    response = client.post("/v2/models/mnist-0to4/infer", content=json.dumps(request))
    body = response.json()
    assert response.status_code == 200 and body["id"] == "abc-1"
    assert [o["name"] for o in body["outputs"]] == ["label", "score"]
    assert body["outputs"][0]["data"] == [labels[1], labels[4]]
    assert body["outputs"][1]["shape"] == [2]


def test_v2_infer_binary_tensors_and_gzip(client, samples):
    images, _ = samples
    head = json.dumps({"inputs": [{"name": "image", "shape": [1, 1, 28, 28], "datatype": "FP32",
                                   "parameters": {"binary_data_size": 784 * 4}}],
                       "outputs": [{"name": "probs", "parameters": {"binary_data": True}}]}).encode()
    body = gzip.compress(head + images[0].astype("<f4").tobytes())
    response = client.post("/v2/models/mnist-0to4/infer", content=body,
                           headers={"Inference-Header-Content-Length": str(len(head)), "Content-Encoding": "gzip"})
    assert response.status_code == 200
    size = int(response.headers["inference-header-content-length"])
    meta = json.loads(response.content[:size])
    probs = np.frombuffer(response.content[size:], "<f4").reshape(meta["outputs"][0]["shape"])
    assert probs.shape == (1, 5) and probs[0].argmax() == 0


@pytest.mark.parametrize("request_body, fragment", [
    ({"inputs": [{"name": "x", "shape": [1, 28, 28], "datatype": "FP32", "data": [0] * 784}]}, "image"),
    ({"inputs": [{"name": "image", "shape": [1, 28, 28], "datatype": "FP32", "data": [0] * 784}],
      "outputs": [{"name": "nope"}]}, "unknown output"),
    ({"inputs": "x"}, "inputs"),
    ({"inputs": [{"name": "image", "shape": [1, 28, 28], "datatype": "FP32", "data": [0] * 784}],
      "parameters": [1]}, "parameters"),
    ({"inputs": [{"name": "image", "shape": [1, 28, 28], "datatype": "FP32", "data": ["1"] * 784}]}, "numbers"),
    ({"inputs": [{"name": "image", "shape": [1, 28, 28], "datatype": "FP32", "data": [0] * 784}], "id": 5}, "id"),
    ({"inputs": [{"name": "image", "shape": [1, 28, 28], "datatype": "FP32", "data": [0] * 784}],
      "parameters": {"binary_data_output": "false"}}, "true or false"),
])
def test_v2_malformed_requests_are_400_with_error_body(client, request_body, fragment):
    response = client.post("/v2/models/mnist-0to4/infer", json=request_body)
    assert response.status_code == 400
    assert fragment in response.json()["error"]


@pytest.mark.parametrize("tensor, fragment", [
    ({"shape": [1, 28, 27], "datatype": "FP32", "data": [0] * 756}, "shape"),
    ({"shape": [1, 28, 28], "datatype": "BOOL", "data": [False] * 784}, "datatype"),
    ({"shape": [1, 28, 28], "datatype": "BYTES", "data": ["0"] * 784}, "datatype"),
    ({"shape": [1, 28, 28], "datatype": "INT8", "data": [-1] * 784}, "0..255"),
    ({"shape": [1, 28, 28], "datatype": "INT64", "data": [0.5] * 784}, "integers"),
    ({"shape": [1, 28, 28], "datatype": "FP32", "data": [0] * 10}, "values"),
    ({"shape": [1, 28, 28], "datatype": "FP32", "data": [3e38] * 784}, "[0, 1]"),
    ({"shape": [1, 28, 28], "datatype": "UINT8", "data": [300] * 784}, "0..255"),
])
def test_v2_wrong_tensors_are_422(client, tensor, fragment):
    response = client.post("/v2/models/mnist-0to4/infer", json={"inputs": [{"name": "image", **tensor}]})
    assert response.status_code == 422
    assert fragment in response.json()["error"]


def test_v2_batch_limit_is_413(client):
    request = {"inputs": [{"name": "image", "shape": [9, 28, 28], "datatype": "FP32", "data": [0] * 784 * 9}]}
    assert client.post("/v2/models/mnist-0to4/infer", json=request).status_code == 413


@pytest.mark.parametrize("kwargs, status", [
    ({"content": b"x" * 100, "headers": {"content-type": "text/plain"}}, 415),
    ({"content": b"\x89PNG\r\n\x1a\n broken", "headers": {"content-type": "image/png"}}, 400),
    ({"json": {"image": [[0] * 28] * 27}}, 422),
    ({"content": '{"image": [' + ",".join(["[" + ",".join(["NaN"] * 28) + "]"] * 28) + "]}",
      "headers": {"content-type": "application/json"}}, 422),
    ({"json": {"picture": []}}, 422),
    ({"content": b"{not json", "headers": {"content-type": "application/json"}}, 422),
    ({"files": {"notes": ("a.txt", b"hello", "text/plain")}, "data": {}}, 400),
])
def test_bad_input_is_a_clear_4xx(client, kwargs, status):
    response = client.post("/v1/predict", **kwargs)
    assert response.status_code == status
    assert set(response.json()) == {"error"} and response.json()["error"]
    assert client.get("/v2/health/ready").status_code == 200  # still serving


def test_too_large_body_is_413(shipped_model_dir):
    with TestClient(create_app(Settings(model_dir=shipped_model_dir, max_body_bytes=2048))) as small:
        response = small.post("/v1/predict", content=b"\0" * 5000, headers={"content-type": "image/png"})
        assert response.status_code == 413 and "exceeds" in response.json()["error"]


def test_batch_over_the_limit_is_413(client):
    response = client.post("/v1/predict/batch", json={"images": [[[0] * 28] * 28] * 9})
    assert response.status_code == 413
    files = [("files", (f"{i}.png", b"x", "image/png")) for i in range(30)]
    assert client.post("/v1/predict/batch", files=files).status_code == 413


def test_sixteen_bit_images_keep_their_range(client, samples):
    images, labels = samples
    deep = (65535 - images[1] * 65535).astype(np.uint16)  # black on white, 16 bits
    buffer = io.BytesIO()
    Image.fromarray(deep).save(buffer, "PNG")
    body = client.post("/v1/predict", content=buffer.getvalue(), headers={"content-type": "image/png"}).json()
    assert body["label"] == labels[1]


def test_api_key(secured, samples):
    body = {"image": (samples[0][0] * 255).tolist()}
    assert secured.post("/v1/predict", json=body).status_code == 401
    assert secured.post("/v1/predict", json=body, headers={"X-API-Key": "wrong"}).status_code == 401
    assert secured.post("/v1/predict", json=body, headers={"X-API-Key": "s3cret"}).status_code == 200
    assert secured.post("/v1/predict", json=body, headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert secured.get("/v2/models/mnist-0to4").status_code == 401
    # Probes and metrics stay open.
    assert secured.get("/v2/health/ready").status_code == 200
    assert secured.get("/metrics").status_code == 200


def test_metrics_count_routes_labels_and_model(client, samples):
    noise = np.random.default_rng(1).integers(0, 256, (28, 28))
    client.post("/v1/predict", json={"image": noise.tolist()})
    client.post("/v1/predict", json={"image": (samples[0][1] * 255).tolist()})
    client.post("/v1/predict", content=b"x", headers={"content-type": "text/plain"})
    text = client.get("/metrics").text
    assert 'openset_predictions_total{label="other",model="mnist-0to4"}' in text
    assert 'openset_predictions_total{label="1",model="mnist-0to4"}' in text
    assert 'openset_requests_total{method="POST",route="/v1/predict",status="415"}' in text
    assert "openset_request_duration_seconds_bucket" in text
    assert 'openset_model_info{name="mnist-0to4"' in text


def test_unknown_route_and_method_use_the_error_body(client):
    assert client.get("/nope").json() == {"error": "Not Found"}
    response = client.get("/v1/predict")
    assert response.status_code == 405 and "error" in response.json()


def test_cors_closed_by_default(client):
    response = client.options("/v1/predict", headers={"Origin": "http://evil.example",
                                                      "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in response.headers


def test_demo_page_and_docs(client):
    page = client.get("/")
    assert page.status_code == 200 and "<canvas" in page.text
    # The docs pages load their scripts from the service itself, never from a CDN.
    pages = {"/docs": ("swagger-ui-bundle.js", "swagger-ui.css"), "/redoc": ("redoc.standalone.js",)}
    for route, assets in pages.items():
        page = client.get(route)
        assert page.status_code == 200 and "://" not in page.text  # no absolute (CDN) address
        for asset in assets:
            assert f"/static/docs/{asset}" in page.text
            assert client.get(f"/static/docs/{asset}").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/v1/predict", "/v1/predict/batch", "/v2/models/{name}/infer", "/metrics"} <= set(paths)


def test_request_id_is_echoed(client):
    assert client.get("/v2/health/live", headers={"X-Request-ID": "r-42"}).headers["x-request-id"] == "r-42"


@pytest.mark.parametrize("datatype", ["FP16", "FP64", "UINT16", "UINT32", "UINT64", "INT16", "INT32", "INT64"])
def test_v2_takes_every_numeric_datatype_as_the_same_picture(client, datatype):
    digit = (np.eye(28) * 255).astype(np.uint8)
    def answer(name, values):
        tensor = {"name": "image", "shape": [1, 28, 28], "datatype": name, "data": values.ravel().tolist()}
        response = client.post("/v2/models/mnist-0to4/infer", json={"inputs": [tensor]})
        assert response.status_code == 200, response.text
        return {out["name"]: out["data"] for out in response.json()["outputs"]}
    unit = datatype.startswith("FP")
    reference = answer("UINT8", digit)
    same = answer(datatype, digit / 255.0 if unit else digit)
    assert same["label"] == reference["label"]
    np.testing.assert_allclose(same["score"], reference["score"], atol=1e-3 if datatype == "FP16" else 1e-6)


def test_v2_json_data_with_a_boolean_among_numbers_is_refused(client):
    tensor = {"name": "image", "shape": [1, 28, 28], "datatype": "FP32", "data": [0.5, True] + [0.0] * 782}
    response = client.post("/v2/models/mnist-0to4/infer", json={"inputs": [tensor]})
    assert response.status_code == 400 and "numbers" in response.json()["error"]

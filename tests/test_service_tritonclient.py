"""A real third-party client against the running server: tritonclient[http], JSON and binary tensors."""

import httpx
import numpy as np
import pytest
import tritonclient.http as triton

from openset.data import load_dataset

MODEL = "mnist-0to4"


@pytest.fixture(scope="module")
def images(data_dir):
    test = load_dataset("mnist", train=False, root=data_dir)
    pick = np.r_[np.nonzero(test.labels < 5)[0][:6], np.nonzero(test.labels >= 5)[0][:6]]
    noise = np.random.default_rng(0).random((2, 1, 28, 28), dtype=np.float32)
    return np.concatenate([test.images[pick], noise]).astype(np.float32)


@pytest.fixture(scope="module")
def client(live_server):
    return triton.InferenceServerClient(live_server.removeprefix("http://"))


@pytest.fixture(scope="module")
def v1_labels(live_server, images):
    body = {"images": [(img[0] * 255).tolist() for img in images]}
    return [p["label"] for p in httpx.post(f"{live_server}/v1/predict/batch", json=body).json()["predictions"]]


def test_health_and_metadata(client):
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready(MODEL)
    assert not client.is_model_ready("nope")
    assert "binary_tensor_data" in client.get_server_metadata()["extensions"]
    meta = client.get_model_metadata(MODEL)
    assert meta["inputs"][0]["name"] == "image"
    assert {o["name"] for o in meta["outputs"]} >= {"probs", "score", "label"}


@pytest.mark.parametrize("binary", [False, True])
def test_infer_matches_v1(client, images, v1_labels, binary):
    inp = triton.InferInput("image", list(images.shape), "FP32")
    inp.set_data_from_numpy(images, binary_data=binary)
    outputs = [triton.InferRequestedOutput(name, binary_data=binary) for name in ("label", "score", "probs")]
    result = client.infer(MODEL, [inp], outputs=outputs, request_id="req-7")
    labels = [v.decode() if isinstance(v, bytes) else v for v in result.as_numpy("label")]
    assert labels == v1_labels
    assert result.as_numpy("probs").shape == (len(images), 5)
    assert result.as_numpy("score").shape == (len(images),)
    assert result.get_response()["id"] == "req-7"
    assert "other" in labels and any(label != "other" for label in labels)


def test_infer_with_default_outputs_and_uint8(client, images, v1_labels):
    inp = triton.InferInput("image", [len(images), 28, 28], "UINT8")
    inp.set_data_from_numpy(np.round(images[:, 0] * 255).astype(np.uint8))
    result = client.infer(MODEL, [inp])  # tritonclient asks for every output, binary
    assert [v.decode() for v in result.as_numpy("label")] == v1_labels
    assert result.as_numpy("distance").shape == (len(images),)


def test_errors_come_back_as_messages(client):
    inp = triton.InferInput("image", [1, 27, 28], "FP32")
    inp.set_data_from_numpy(np.zeros((1, 27, 28), np.float32))
    with pytest.raises(triton.InferenceServerException, match="shape"):
        client.infer(MODEL, [inp])
    with pytest.raises(triton.InferenceServerException, match="unknown model"):
        client.get_model_metadata("nope")


def test_kserve_style_health_bodies(live_server):
    # The kserve client reads these keys from the health endpoints.
    assert httpx.get(f"{live_server}/v2/health/live").json()["live"] is True
    assert httpx.get(f"{live_server}/v2/health/ready").json()["ready"] is True

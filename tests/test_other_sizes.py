"""A model of another size and class set needs no change anywhere: a tiny one is trained on 3 classes of 16x16 digits
and served, and the service, its OpenAPI schema and ``openset evaluate`` all follow its manifest."""

import io
import json

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from openset.config import Config
from openset.data import load_dataset
from service.main import create_app
from service.settings import Settings
from training import evaluate, train

SIDE, CLASSES = 16, [0, 1, 2]


def write_idx(path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    header = bytes([0, 0, 8, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    path.write_bytes(header + np.ascontiguousarray(array, np.uint8).tobytes())


def at_16(images: np.ndarray) -> np.ndarray:
    """28x28 digits [N, 1, 28, 28] in [0, 1] as 16x16 bytes: 2x2 means, then a one-pixel margin."""
    small = images[:, 0].reshape(len(images), 14, 2, 14, 2).mean((2, 4))
    return np.round(np.pad(small, ((0, 0), (1, 1), (1, 1))) * 255)


@pytest.fixture(scope="module")
def small_world(tmp_path_factory, data_dir):
    """A data root of 16x16 datasets (parts of the real ones), and a model trained on it."""
    root = tmp_path_factory.mktemp("data16")
    parts = {("mnist", True): 6000, ("mnist", False): 2000, ("fashion_mnist", False): 500, ("kmnist", False): 500}
    folders = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST", "kmnist": "KMNIST"}
    for (name, is_train), count in parts.items():
        split = load_dataset(name, train=is_train, root=data_dir)
        prefix = "train" if is_train else "t10k"
        write_idx(root / folders[name] / "raw" / f"{prefix}-images-idx3-ubyte", at_16(split.images[:count]))
        write_idx(root / folders[name] / "raw" / f"{prefix}-labels-idx1-ubyte", split.labels[:count])
    cfg = Config().override(name="digits-0to2-16px", data={"known_classes": CLASSES},
                            model={"hidden": [64], "dropout": 0.0}, optim={"epochs": 2, "batch_size": 128},
                            scores={"knn_k": 3}, evaluation={"shift_per_class": 0})
    config = root / "config.json"
    config.write_text(json.dumps(cfg.to_dict()))
    out = tmp_path_factory.mktemp("model16") / "model"
    args = train.get_args_parser().parse_args(["--config", str(config), "--out", str(out), "--no-plots",
                                               "--data-dir", str(root), "--checkpoint-dir", str(root / "ckpt")])
    train.main(args)
    return root, out


@pytest.fixture(scope="module")
def client(small_world):
    _, out = small_world
    with TestClient(create_app(Settings(model_dir=out))) as client:
        yield client


def test_the_manifest_describes_the_small_model(small_world):
    _, out = small_world
    manifest = json.loads((out / "model.json").read_text())
    assert manifest["classes"] == ["0", "1", "2"]
    assert manifest["input"]["shape"] == [-1, 1, SIDE, SIDE]
    assert manifest["input"]["layout"]["side"] == SIDE and manifest["input"]["layout"]["box"] < SIDE
    assert {o["name"]: o["shape"] for o in manifest["outputs"]}["probs"] == [-1, 3]


def test_v2_metadata_and_openapi_follow_the_manifest(client):
    meta = client.get("/v2/models/digits-0to2-16px").json()
    assert meta["inputs"] == [{"name": "image", "datatype": "FP32", "shape": [-1, 1, SIDE, SIDE]}]
    assert {o["name"]: o["shape"] for o in meta["outputs"]}["probs"] == [-1, 3]
    assert meta["parameters"]["classes"] == ["0", "1", "2"]
    components = client.get("/openapi.json").json()["components"]["schemas"]
    image = components["ArrayImage"]["properties"]["image"]
    assert image["minItems"] == image["maxItems"] == SIDE
    shapes = components["InferRequest"]["properties"]["inputs"]["items"]["properties"]["shape"]["oneOf"]
    assert shapes[0]["prefixItems"][1:] == [{"const": SIDE}, {"const": SIDE}]


def test_v1_answers_16x16_arrays_and_pictures(client, small_world):
    root, _ = small_world
    test = load_dataset("mnist", train=False, root=root)
    known = np.isin(test.labels, CLASSES)
    images, labels = test.images[known][:60, 0], test.labels[known][:60]
    body = client.post("/v1/predict/batch", json={"images": (images * 255).round().tolist()})
    assert body.status_code == 200, body.text
    answers = body.json()["predictions"]
    assert all(set(a["scores"]["probs"]) == {"0", "1", "2"} for a in answers)
    assert all(a["label"] in ("0", "1", "2", "other") for a in answers)
    argmax = [int(max(a["scores"]["probs"], key=a["scores"]["probs"].get)) for a in answers]
    assert np.mean(np.array(argmax) == labels) >= 0.8
    # A picture: a digit drawn large, dark on white, laid out into the model's 16x16 field by its manifest.
    digit = Image.fromarray(np.uint8(255 - images[0] * 255)).resize((160, 160), Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    digit.save(buffer, format="PNG")
    picture = client.post("/v1/predict", content=buffer.getvalue(), headers={"content-type": "image/png"})
    assert picture.status_code == 200, picture.text
    assert picture.json()["label"] in ("0", "1", "2", "other")
    wrong = client.post("/v1/predict", json={"image": [[0] * 28] * 28})
    assert wrong.status_code == 422


def test_v2_takes_the_models_shape_and_refuses_mnists(client):
    good = {"inputs": [{"name": "image", "shape": [2, 1, SIDE, SIDE], "datatype": "UINT8",
                        "data": [0] * (2 * SIDE * SIDE)}]}
    answer = client.post("/v2/models/digits-0to2-16px/infer", json=good)
    assert answer.status_code == 200, answer.text
    outputs = {o["name"]: o for o in answer.json()["outputs"]}
    assert outputs["probs"]["shape"] == [2, 3] and len(outputs["label"]["data"]) == 2
    mnist = {"inputs": [{"name": "image", "shape": [1, 28, 28], "datatype": "UINT8", "data": [0] * 784}]}
    refused = client.post("/v2/models/digits-0to2-16px/infer", json=mnist)
    assert refused.status_code == 422 and "[N, 1, 16, 16]" in refused.json()["error"]


def test_evaluate_re_measures_the_small_model(small_world, tmp_path):
    root, out = small_world
    args = evaluate.get_args_parser().parse_args(["--model", str(out), "--data-dir", str(root),
                                                  "--out", str(tmp_path / "figures.json")])
    measured = evaluate.main(args)
    recorded = json.loads((out / "model.json").read_text())["metrics"]
    assert measured["known_accuracy"] == pytest.approx(recorded["known_accuracy"], abs=1e-6)
    assert set(measured["unknown"]) == {"mnist_3_4_5_6_7_8_9", "fashion_mnist", "kmnist", "uniform_noise"}

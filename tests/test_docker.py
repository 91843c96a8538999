"""The serving image built and run for real (``make test-docker``; needs a Docker engine)."""

import io
import json
import shlex
import shutil
import subprocess
import time
import urllib.request

import numpy as np
import pytest
from PIL import Image

from .conftest import REPO
from .test_readme import URL, readme_command, serving

pytestmark = pytest.mark.docker
IMAGE = "openset"
# The README's Deploy commands: the usual ones, and those for an engine without a bridge network (as here).
WITH_BRIDGE = ("docker build -t openset .", "docker run -p 8000:8000 openset")
HOST_NETWORK = ("docker build --network host -t openset .", "docker run --network host openset")


def docker(*args, check=True, timeout=900) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check, timeout=timeout)


@pytest.fixture(scope="module")
def commands() -> tuple[str, str]:
    if not shutil.which("docker") or docker("info", check=False).returncode != 0:
        pytest.fail("no Docker engine: run ../shared/tools/docker-sandbox up (or start Docker)")
    bridge = docker("network", "inspect", "bridge", check=False).returncode == 0
    return tuple(readme_command(c) for c in (WITH_BRIDGE if bridge else HOST_NETWORK))


@pytest.fixture(scope="module")
def image(commands):
    build = subprocess.run(shlex.split(commands[0]), cwd=REPO, capture_output=True, text=True, timeout=1800)
    assert build.returncode == 0, build.stderr[-3000:]
    return IMAGE


@pytest.fixture(scope="module")
def container(image, commands):
    """The README's ``docker run``, as typed, serving on port 8000 until the module ends."""
    with serving(commands[1], REPO, timeout=120):
        [name] = docker("ps", "--filter", f"ancestor={image}", "--format", "{{.Names}}").stdout.split()
        try:
            for _ in range(120):
                health = docker("inspect", "--format", "{{.State.Health.Status}}", name, check=False).stdout.strip()
                if health == "healthy":
                    break
                time.sleep(0.5)
            else:
                pytest.fail(f"container never became healthy: {docker('logs', name, check=False).stderr[-2000:]}")
            yield name, URL
        finally:
            docker("stop", "-t", "10", name, check=False)
    docker("rm", "-f", name, check=False)


def post(url: str, body: bytes, content_type: str) -> dict:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": content_type}, method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def test_serves_a_real_png_and_a_v2_request(container, data_dir):
    from openset.data import load_dataset

    _, url = container
    test = load_dataset("mnist", train=False, root=data_dir)
    images, labels = test.images[:200, 0], test.labels[:200]
    noise = np.random.default_rng(0).integers(0, 256, (28, 28), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, "PNG")
    assert post(f"{url}/v1/predict", buffer.getvalue(), "image/png")["label"] == "other"
    digit = int(np.nonzero(labels == 1)[0][0])
    buffer = io.BytesIO()
    Image.fromarray((255 - images[digit] * 255).astype(np.uint8)).resize((140, 140)).save(buffer, "PNG")
    assert post(f"{url}/v1/predict", buffer.getvalue(), "image/png")["label"] == "1"
    known = np.nonzero(labels < 5)[0][:32]
    request = {"id": "docker", "inputs": [{"name": "image", "shape": [len(known), 1, 28, 28], "datatype": "FP32",
                                           "data": images[known].ravel().tolist()}],
               "outputs": [{"name": "label"}]}
    name = json.loads((REPO / "models" / "mnist-0to4" / "model.json").read_text())["name"]
    body = post(f"{url}/v2/models/{name}/infer", json.dumps(request).encode(), "application/json")
    answers = body["outputs"][0]["data"]
    assert body["id"] == "docker"
    # Knowns come back as their digit, or (5 % by design) as "other" — never as another digit.
    assert all(a in (str(t), "other") for a, t in zip(answers, labels[known], strict=True))
    assert sum(a == str(t) for a, t in zip(answers, labels[known], strict=True)) >= 0.85 * len(known)


def test_runs_as_non_root_without_torch(container, image):
    name, _ = container
    assert docker("exec", name, "id", "-u").stdout.strip() != "0"
    probe = docker("run", "--rm", "--entrypoint", "python", image, "-c",
                   "import importlib.util; print(importlib.util.find_spec('torch') is None)")
    assert probe.stdout.strip() == "True"


# What this project adds on top of python:3.11-slim. The target is 300 MB for the whole image; the
# official slim base is about 130 MB, so the layers here get the rest. (The stand-in base that
# docker-sandbox builds from Debian packages is larger than the official one, so the whole image is not
# the figure to compare here.)
OWN_LAYERS_BUDGET = 170e6


def test_image_size_is_recorded_and_within_target(image):
    size = int(docker("image", "inspect", "--format", "{{.Size}}", image).stdout.strip())
    base = int(docker("image", "inspect", "--format", "{{.Size}}", "python:3.11-slim").stdout.strip())
    (REPO / "test-output").mkdir(exist_ok=True)
    (REPO / "test-output" / "docker-image-size.txt").write_text(
        f"serving image {size / 1e6:.0f} MB = base {base / 1e6:.0f} MB + own layers {(size - base) / 1e6:.0f} MB\n")
    assert size - base <= OWN_LAYERS_BUDGET

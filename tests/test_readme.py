"""A newcomer's path: the README's commands, exactly as written, in a fresh copy of the repository with
``../shared/data`` beside it and nothing set in the environment — ``make run`` (a serving install: no torch),
the curl lines, the venv put on PATH, ``openset --help``, ``openset evaluate`` and ``openset-serve``.
The Docker commands of the README are run in ``tests/test_docker.py``."""

import contextlib
import io
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from .conftest import REPO

README = (REPO / "README.md").read_text()
URL = "http://127.0.0.1:8000"  # the README's address


# Every line of the README's bash blocks, its comment aside.
SHOWN = [line.split(" #")[0].strip() for block in re.findall(r"```bash\n(.*?)```", README, re.S)
         for line in block.splitlines()]


def readme_command(command: str) -> str:
    """``command``, checked to be a line the README shows."""
    assert command in SHOWN, f"the README no longer shows {command!r}"
    return command


def readme_commands(prefix: str) -> list[str]:
    found = [line for line in SHOWN if line.startswith(prefix)]
    assert found, f"the README shows no {prefix!r} command"
    return found


ACTIVATE = readme_command(". .venv/bin/activate")


def newcomer_env() -> dict:
    """The environment of a fresh shell: no OPENSET_* setting and no active venv."""
    return {k: v for k, v in os.environ.items() if not k.startswith("OPENSET_") and k != "VIRTUAL_ENV"}


def bash(script: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", script], cwd=cwd, env=newcomer_env(), capture_output=True, text=True,
                          timeout=timeout)


@contextlib.contextmanager
def serving(script: str, cwd: Path, timeout: float):
    """Run ``script`` (a command that serves on port 8000) in its own process group until the block ends;
    yields the file its output goes to."""
    if port_in_use():
        pytest.fail("port 8000 is in use; the README's commands serve there")
    log = cwd / f".serve-{time.monotonic_ns()}.log"
    with log.open("w") as out:
        process = subprocess.Popen(["bash", "-c", script], cwd=cwd, env=newcomer_env(), stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while True:
            assert process.poll() is None, f"{script!r} stopped: {log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"{script!r} not serving after {timeout} s: {log.read_text()[-3000:]}"
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(f"{URL}/v2/health/ready", timeout=1) as response:
                    if response.status == 200:
                        break
            time.sleep(0.5)
        yield log
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=60)
        # The shell is gone; the server it started (a grandchild, e.g. under `make`) may still be closing its
        # socket. The next README command needs port 8000, so the block ends when the port is free.
        deadline = time.monotonic() + 60
        while port_in_use() and time.monotonic() < deadline:
            time.sleep(0.1)
        log.unlink(missing_ok=True)


def port_in_use() -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", 8000)) == 0


def run_curl_lines(cwd: Path, path: str = "/v1/predict", env: str = "") -> list[dict]:
    """The README's curl lines to ``path``, each run as typed (after ``env``, e.g. an export)."""
    answers = []
    for line in readme_commands("curl "):
        if not line.endswith(f"{URL}{path}"):
            continue
        result = bash(env + line, cwd, timeout=30)
        assert result.returncode == 0, result.stderr
        answers.append(json.loads(result.stdout))
    return answers


@pytest.fixture(scope="module")
def newcomer(tmp_path_factory, data_dir) -> Path:
    """What a clone holds (tracked and new files, nothing ignored), with ``../shared/data`` beside it."""
    root = tmp_path_factory.mktemp("newcomer")
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        if (REPO / name).is_file():  # a tracked file deleted in the working tree is not copied
            (root / "repo" / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, root / "repo" / name)
    (root / "shared").mkdir()
    (root / "shared" / "data").symlink_to(Path(data_dir).resolve())
    return root / "repo"


@pytest.fixture(scope="module")
def digit_png(newcomer, shipped_runtime, data_dir) -> str:
    """``digit.png`` of the curl lines: an MNIST test 3, drawn black on white at 112x112 as a person's picture,
    one that the shipped model (service preprocessing included) answers "3"; returns that label."""
    from openset.data import load_dataset
    from service.preprocess import from_image_bytes

    test = load_dataset("mnist", train=False, root=data_dir)
    for index in np.nonzero(test.labels == 3)[0]:
        buffer = io.BytesIO()
        Image.fromarray((255 - test.images[index, 0] * 255).astype(np.uint8)).resize((112, 112)).save(buffer, "PNG")
        image = from_image_bytes(buffer.getvalue(), 10**6)[None, None]
        if shipped_runtime.predict(image)[0].label == "3":
            (newcomer / "digit.png").write_bytes(buffer.getvalue())
            return "3"
    pytest.fail("no MNIST test 3 is answered 3")


@pytest.fixture(scope="module")
def make_run(newcomer, digit_png) -> dict:
    """``make run`` on the fresh copy: what it installed and what the curl lines got while it served."""
    with serving(readme_command("make run"), newcomer, timeout=900) as log:
        answers = run_curl_lines(newcomer)
        v2 = run_curl_lines(newcomer, "/v2/models/mnist-0to4/infer")
        output = log.read_text()
    assert "deprecat" not in output.lower() and "Traceback" not in output, output[-3000:]
    site = next((newcomer / ".venv" / "lib").glob("python*/site-packages"))
    size = sum(p.stat().st_size for p in (newcomer / ".venv").rglob("*") if p.is_file() and not p.is_symlink())
    (REPO / "test-output").mkdir(exist_ok=True)
    (REPO / "test-output" / "make-run-venv-size.txt").write_text(f"make run installs {size / 1e6:.0f} MB in .venv\n")
    return {"site": site, "answers": answers, "v2": v2}


def test_stopping_make_run_by_its_pid_stops_the_server_and_its_processes(make_run, newcomer):
    """``kill <pid of make run>`` (SIGTERM to make alone, not its process group): make passes it on, the server
    shuts down and frees the port, and no process of its own (the picture process) is left behind."""
    if port_in_use():
        pytest.fail("port 8000 is in use; the README's commands serve there")
    process = subprocess.Popen(["make", "run"], cwd=newcomer, env=newcomer_env(), stdout=subprocess.DEVNULL,
                               stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not port_in_use():
            assert process.poll() is None and time.monotonic() < deadline, "make run did not serve"
            time.sleep(0.2)
        with contextlib.suppress(OSError):  # (ready: the picture process is up by then)
            urllib.request.urlopen(f"{URL}/v2/health/ready", timeout=5)
        os.kill(process.pid, signal.SIGTERM)
        process.wait(timeout=60)
        deadline = time.monotonic() + 30
        while port_in_use() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not port_in_use(), "the server still answers after make run was stopped by its pid"
        deadline, left = time.monotonic() + 10, ["?"]
        while left and time.monotonic() < deadline:  # (the multiprocessing resource tracker ends just after)
            left = subprocess.run(["pgrep", "-s", str(process.pid)], capture_output=True, text=True).stdout.split()
            time.sleep(0.2)
        assert not left, f"processes of make run left behind: {left}"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)


def test_make_run_installs_the_serving_extra_only(make_run):
    installed = {p.name.split("-")[0].lower() for p in make_run["site"].glob("*.dist-info")}
    assert {"onnxruntime", "fastapi", "uvicorn", "pillow"} <= installed
    assert not installed & {"torch", "torchvision", "scikit_learn", "optuna", "ray", "pytest"}, installed


def test_make_run_answers_the_curl_lines(make_run, digit_png):
    """The picture twice (multipart, raw) and the JSON body of examples/, a 3 as well; and the v2 request."""
    assert len(make_run["answers"]) == 3
    for answer in make_run["answers"]:
        assert answer["label"] == digit_png and answer["known"] is True
        assert answer["scores"]["score"] >= answer["scores"]["threshold"]
    [v2] = make_run["v2"]
    outputs = {output["name"]: output for output in v2["outputs"]}
    assert v2["model_name"] == "mnist-0to4" and outputs["label"]["data"] == ["3"]
    assert outputs["score"]["data"][0] == pytest.approx(make_run["answers"][2]["scores"]["score"], abs=1e-5)


def test_openset_serve_with_the_venv_on_path_and_a_reload(make_run, newcomer, digit_png):
    admin = "export OPENSET_ADMIN_KEY=s3cret && "  # the admin API exists only with a key (README: Settings)
    with serving(f"{admin}{ACTIVATE} && {readme_command('openset-serve')}", newcomer, timeout=60):
        assert [a["label"] for a in run_curl_lines(newcomer)] == [digit_png] * 3
        [reloaded] = run_curl_lines(newcomer, "/admin/reload", env=admin)
        metas = [json.loads(path.read_text()) for path in sorted((newcomer / "models").glob("*/model.json"))]
        assert reloaded == {"models": [{"model": f"{meta['name']}/{meta['version']}", "sha256": meta["onnx_sha256"]}
                                       for meta in metas]}


def test_openset_help_and_evaluate_on_the_serving_install(make_run, newcomer):
    help_text = bash(f"{ACTIVATE} && {readme_command('openset --help')}", newcomer)
    assert help_text.returncode == 0, help_text.stderr
    for command in ("train", "evaluate", "robustness", "export", "holdout", "sweep", "tune"):
        assert re.search(rf"^\s+{command}\s", help_text.stdout, re.M), command
    evaluate = bash(f"{ACTIVATE} && {readme_command('openset evaluate --model models/mnist-0to4')}", newcomer)
    assert evaluate.returncode == 0, evaluate.stderr[-3000:]
    # The data root the README promises, found by the library itself and named on one line.
    assert f"data: {newcomer.parent / 'shared' / 'data'} (../shared/data beside the repository)" in evaluate.stderr
    measured = json.loads(evaluate.stdout)
    assert measured["max_drift_from_model_json"] <= 1e-6
    # The shift benchmark runs on a serving install too (the README's quick look, as written).
    quick = "openset robustness --model models/mnist-0to4 --per-class 5 --changes defocus jpeg"
    shift = bash(f"{ACTIVATE} && {readme_command(quick)}", newcomer)
    assert shift.returncode == 0, shift.stderr[-3000:]
    assert re.search(r"^\| defocus \| tuning \|", shift.stdout, re.M) and re.search(r"^\| jpeg \| held_out \|",
                                                                                   shift.stdout, re.M)


def test_every_shown_training_command_parses():
    """The training commands need the `train` extra (make train); here: the README shows the options they take."""
    from training.cli import get_parser

    for line in readme_commands("openset "):
        argv = shlex.split(line)[1:]
        if argv and argv[0] in ("train", "robustness", "export", "holdout", "sweep", "tune"):
            get_parser(argv[0]).parse_args(argv)  # exits with status 2 on an unknown or missing option


def test_the_quick_config_trains_as_shown(tmp_path, data_dir):
    """The README's quick try, as written, in a folder holding only the config (the venv's ``openset`` on PATH):
    the shipped config in one epoch, with fewer shift digits (nothing else differs), ending in a complete artefact."""
    from openset.config import Config

    line = readme_command("openset train --config configs/mnist-0to4-quick.json --out runs/quick")
    (tmp_path / "configs").mkdir()
    for name in ("mnist-0to4-quick.json", "mnist-0to4.json"):  # (the quick one extends the default)
        shutil.copy(REPO / "configs" / name, tmp_path / "configs")
    env = {**os.environ, "OPENSET_DATA_DIR": str(data_dir),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(["bash", "-c", line], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    quick = Config.from_json(REPO / "configs" / "mnist-0to4-quick.json").to_dict()
    shipped = Config.from_json(REPO / "configs" / "mnist-0to4.json").to_dict()
    differ = {key for key in shipped if quick[key] != shipped[key]}
    assert differ == {"name", "optim", "evaluation"}  # the default, one epoch, fewer shift digits
    assert {k for k in shipped["optim"] if quick["optim"][k] != shipped["optim"][k]} == {"epochs"}
    assert quick["optim"]["epochs"] == 1
    report = json.loads((tmp_path / "runs" / "quick" / "report.json").read_text())
    assert report["robustness"]["samples"]["known"] == 5 * 5 and (tmp_path / "runs" / "quick" / "model.onnx").is_file()

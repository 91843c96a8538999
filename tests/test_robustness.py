"""The shift benchmark: its changes (openset.shifts) and its measurement (training.robustness, openset robustness)."""

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from openset import shifts
from openset.data import load_dataset
from service.preprocess import from_image_bytes
from training.robustness import balanced, pictures, shift_benchmark, table

GEOMETRIC = {"rotate", "shear", "squeeze", "other_writer"}  # these change the digit's shape on purpose


@pytest.fixture(scope="module")
def test_digits(data_dir):
    return load_dataset("mnist", train=False, root=data_dir)


def test_the_changes_come_in_two_groups():
    groups = {change.group for change in shifts.CHANGES.values()}
    assert groups == {"tuning", "held_out"}
    assert all(change.description for change in shifts.CHANGES.values())


@pytest.mark.parametrize("name", list(shifts.CHANGES))
def test_every_change_gives_a_picture_the_service_reads(name, test_digits):
    digit = test_digits.images[0, 0]
    for severity in shifts.SEVERITIES:
        data = shifts.render(digit, name, severity, np.random.default_rng(0))
        picture = Image.open(io.BytesIO(data))
        assert picture.size == (shifts.PAGE, shifts.PAGE) and picture.format in ("PNG", "JPEG")
        model_input = from_image_bytes(data, max_pixels=10**6)
        assert model_input.max() > 0.9  # a digit was found and scaled to full strength
        if name not in GEOMETRIC:  # ... and it is the digit: close to the clean picture's model input
            clean = from_image_bytes(shifts.render_clean(digit, np.random.default_rng(0)), max_pixels=10**6)
            assert np.corrcoef(model_input.ravel(), clean.ravel())[0, 1] > 0.6


def test_rendering_is_seeded(test_digits):
    digit = test_digits.images[1, 0]
    one = shifts.render(digit, "phone_photo", 2, np.random.default_rng(5))
    assert one == shifts.render(digit, "phone_photo", 2, np.random.default_rng(5))
    assert one != shifts.render(digit, "phone_photo", 2, np.random.default_rng(6))


def test_pen_changes_move_the_ink_the_right_way(test_digits):
    ink = shifts.upscale(test_digits.images[2, 0])
    assert shifts.morph(ink, -2).sum() < ink.sum() < shifts.morph(ink, 4).sum()


def test_shade_darkens_one_side_of_the_page():
    page = shifts.shade(np.ones((160, 160), np.float32), 0.4, np.random.default_rng(0))
    assert page.max() == pytest.approx(1.0, abs=0.01) and page.min() == pytest.approx(0.4, abs=0.01)


def test_balanced_takes_the_same_number_of_every_class(test_digits):
    sample = balanced(test_digits, 7, seed=0)
    assert np.bincount(sample.labels).tolist() == [7] * 10
    assert np.array_equal(sample.images, balanced(test_digits, 7, seed=0).images)


def test_benchmark_figures_and_groups(test_digits, shipped_runtime):
    known = balanced(test_digits.subset(np.nonzero(test_digits.labels < 5)[0]), 4, seed=0)
    unknown = balanced(test_digits.subset(np.nonzero(test_digits.labels >= 5)[0]), 4, seed=0)
    changes = ["rotate", "jpeg"]
    result = shift_benchmark(shipped_runtime.run, shipped_runtime.manifest.threshold, known, unknown, changes)
    assert result["samples"] == {"known": 20, "unknown": 20}
    assert set(result["changes"]) == set(changes) and set(result["groups"]) == {"tuning", "held_out", "all"}
    for row in [result["clean"], *(r for c in result["changes"].values() for r in c["severity"].values())]:
        assert set(row) == {"known_right", "known_accepted", "unknown_refused"}
        assert 0 <= row["known_right"] <= row["known_accepted"] <= 1 and 0 <= row["unknown_refused"] <= 1
    rotate = result["changes"]["rotate"]
    per_severity = [r["known_right"] for r in rotate["severity"].values()]
    assert rotate["mean"]["known_right"] == pytest.approx(np.mean(per_severity))
    assert len(table(result)) == 2 + 1 + 2 + 3 * 2  # header, clean, changes, mean and worst per group
    # The pictures are what the figures were measured on: the same in a second call.
    assert np.array_equal(pictures(known, "jpeg", 2, 0), pictures(known, "jpeg", 2, 0))


def test_openset_robustness_end_to_end(tmp_path, data_dir, shipped_model_dir):
    out = tmp_path / "shift.json"
    result = subprocess.run([str(Path(sys.executable).parent / "openset"), "robustness", "--model",
                             str(shipped_model_dir), "--per-class", "2", "--changes", "defocus", "--out", str(out),
                             "--data-dir", str(data_dir)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "| defocus | tuning |" in result.stdout
    assert json.loads(out.read_text())["samples"] == {"known": 10, "unknown": 10}

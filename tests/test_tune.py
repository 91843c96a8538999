"""``openset tune``: Optuna over a declared space, on known-class validation data."""

import json
from argparse import Namespace

import pytest

from openset.config import Config, ConfigError
from training.tune import load_tune_file, main

from .conftest import REPO


def test_shipped_tune_file_is_valid():
    base, space, trials = load_tune_file(REPO / "configs" / "tune" / "mnist-mlp.json")
    assert base == Config.from_json(REPO / "configs" / "mnist-0to4.json")
    assert "optim.lr" in space and trials >= 10


TINY = {"base": {"model": {"hidden": [16], "dropout": 0.0}, "optim": {"epochs": 1, "batch_size": 512}},
        "trials": 3,
        "space": {"optim.lr": {"low": 1e-4, "high": 1e-2, "log": True},
                  "model.hidden": {"choices": [[8], [16]]}}}


def check_tune_output(out, rows):
    assert len(rows) == 3
    best = json.loads((out / "best.json").read_text())
    assert best["value"] == max(r["value"] for r in rows if r["state"] == "complete")
    assert 1e-4 <= best["overrides"]["optim"]["lr"] <= 1e-2
    config = Config.from_json(out / "best-config.json")
    assert list(config.model.hidden) in ([8], [16])
    assert config.optim.lr == best["overrides"]["optim"]["lr"]
    assert (out / "trials.md").read_text().count("\n") == 5


def test_tune_searches_the_space_and_writes_the_best_config(tmp_path, data_dir):
    (tmp_path / "tune.json").write_text(json.dumps(TINY))
    rows = main(Namespace(tune_file=str(tmp_path / "tune.json"), out=str(tmp_path / "out"), trials=None,
                          epochs=None, data_dir=str(data_dir), seed=0))
    check_tune_output(tmp_path / "out", rows)


def test_tune_on_a_local_ray_instance(tmp_path, data_dir):
    import ray

    (tmp_path / "tune.json").write_text(json.dumps(TINY))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        rows = main(Namespace(tune_file=str(tmp_path / "tune.json"), out=str(tmp_path / "out"), trials=None,
                              epochs=None, data_dir=str(data_dir), seed=0, ray_address="auto"))
    finally:
        ray.shutdown()
    assert all(r["state"] == "complete" for r in rows)  # one epoch: nothing to prune
    check_tune_output(tmp_path / "out", rows)


@pytest.mark.parametrize("spec, fragment", [
    ({"space": {}}, "non-empty"),
    ({"space": {"lr": {"low": 0, "high": 1}}}, "section.field"),
    ({"space": {"optim.lr": {"low": 0}}}, "choices"),
    ({"base": {"optim": {"name": "x"}}, "space": {"optim.lr": {"low": 0, "high": 1}}}, "invalid"),
])
def test_bad_tune_files_are_clear_errors(tmp_path, spec, fragment):
    (tmp_path / "t.json").write_text(json.dumps(spec))
    with pytest.raises(ConfigError, match=fragment):
        load_tune_file(tmp_path / "t.json")

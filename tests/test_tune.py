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


def test_tune_searches_the_space_and_writes_the_best_config(tmp_path, data_dir):
    spec = {"base": {"model": {"hidden": [16], "dropout": 0.0}, "optim": {"epochs": 1, "batch_size": 512}},
            "trials": 3,
            "space": {"optim.lr": {"low": 1e-4, "high": 1e-2, "log": True},
                      "model.hidden": {"choices": [[8], [16]]}}}
    (tmp_path / "tune.json").write_text(json.dumps(spec))
    study = main(Namespace(tune_file=str(tmp_path / "tune.json"), out=str(tmp_path / "out"), trials=None,
                           epochs=None, data_dir=str(data_dir), seed=0))
    assert len(study.trials) == 3
    best = json.loads((tmp_path / "out" / "best.json").read_text())
    assert best["value"] == max(t.value for t in study.trials if t.value is not None)
    assert 1e-4 <= best["overrides"]["optim"]["lr"] <= 1e-2
    config = Config.from_json(tmp_path / "out" / "best-config.json")
    assert list(config.model.hidden) in ([8], [16])
    assert (tmp_path / "out" / "trials.md").read_text().count("\n") == 5


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

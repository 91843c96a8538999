"""``openset sweep`` on tiny configs: the table, the CSV and the figures."""

import csv
import json
from argparse import Namespace

import pytest

from openset.config import Config, ConfigError
from training.sweep import config_paths, main

from .conftest import REPO


def test_every_shipped_study_config_is_valid():
    paths = sorted((REPO / "configs" / "studies").rglob("*.json"))
    assert len(paths) >= 40
    names = [Config.from_json(p).name for p in paths]
    assert len(set(names)) == len(names)


def test_sweep_writes_table_csv_and_figures(tmp_path, data_dir):
    folder = tmp_path / "study"
    folder.mkdir()
    for name, hidden in (("tiny-a", [16]), ("tiny-b", [])):
        body = {"name": name, "model": {"hidden": hidden, "dropout": 0.0},
                "optim": {"epochs": 1, "batch_size": 512}, "scores": {"knn_bank": 256, "knn_k": 3}}
        (folder / f"{name}.json").write_text(json.dumps(body))
    rows = main(Namespace(configs=[str(folder)], out=str(tmp_path / "out"), data_dir=str(data_dir), epochs=None,
                          title="tiny"))
    assert [r["config"] for r in rows] == ["tiny-a", "tiny-b"]
    with open(tmp_path / "out" / "results.csv") as handle:
        table = list(csv.DictReader(handle))
    assert [r["config"] for r in table] == ["tiny-a", "tiny-b"]
    assert int(table[1]["params"]) == 784 * 5 + 5 + 784 * 5 + 5  # logistic regression + one-vs-rest head
    for row in table:
        assert 0.5 < float(row["test_acc"]) <= 1.0 and 0.5 < float(row["open_set_auroc"]) <= 1.0
    assert "| tiny-a |" in (tmp_path / "out" / "results.md").read_text()
    for figure in ("curves.png", "summary.png"):
        assert (tmp_path / "out" / figure).stat().st_size > 5000


def test_a_bad_config_stops_the_sweep_before_any_trial(tmp_path):
    (tmp_path / "a.json").write_text('{"optim": {"name": "nope"}}')
    with pytest.raises(ConfigError):
        main(Namespace(configs=[str(tmp_path)], out=str(tmp_path / "out"), data_dir=None, epochs=None, title=None))
    assert not (tmp_path / "out").exists()


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no config"):
        config_paths([str(tmp_path / "nothing")])


def test_sweep_on_a_local_ray_instance(tmp_path, data_dir):
    import ray

    folder = tmp_path / "study"
    folder.mkdir()
    for name, hidden in (("ray-a", [8]), ("ray-b", [16])):
        body = {"name": name, "model": {"hidden": hidden, "dropout": 0.0},
                "optim": {"epochs": 1, "batch_size": 512}, "scores": {"knn_bank": 256, "knn_k": 3}}
        (folder / f"{name}.json").write_text(json.dumps(body))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        rows = main(Namespace(configs=[str(folder)], out=str(tmp_path / "out"), data_dir=str(data_dir), epochs=None,
                              title="ray", ray_address="auto"))
    finally:
        ray.shutdown()
    assert [r["config"] for r in rows] == ["ray-a", "ray-b"]
    assert all(0.5 < r["open_set_auroc"] <= 1.0 and len(r["history"]) == 1 for r in rows)
    with open(tmp_path / "out" / "results.csv") as handle:
        assert [r["config"] for r in csv.DictReader(handle)] == ["ray-a", "ray-b"]

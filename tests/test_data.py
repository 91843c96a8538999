import numpy as np
import pytest

from openset.config import DataConfig
from openset.data import DataNotFoundError, load_dataset, open_set_data, uniform_noise


@pytest.fixture(scope="module")
def data(data_dir):
    return open_set_data(DataConfig(), seed=0, root=data_dir)


def test_known_splits_hold_only_known_classes_remapped(data):
    assert data.classes == (0, 1, 2, 3, 4)
    for split in (data.train, data.val, data.test_known):
        assert set(np.unique(split.labels).tolist()) == {0, 1, 2, 3, 4}
    assert set(np.unique(data.test_unknown.labels).tolist()) == {5, 6, 7, 8, 9}
    assert set(np.unique(data.train_unknown.labels).tolist()) == {5, 6, 7, 8, 9}


def test_images_are_float_in_unit_range(data):
    assert data.train.images.dtype == np.float32
    assert data.train.images.shape[1:] == (1, 28, 28)
    assert 0.0 <= float(data.val.images.min()) and float(data.val.images.max()) <= 1.0


def test_split_is_disjoint_complete_and_stratified(data, data_dir):
    full = load_dataset("mnist", train=True, root=data_dir)
    known_count = int(np.isin(full.labels, np.arange(5)).sum())
    assert len(data.train) + len(data.val) == known_count
    assert len(data.val) == pytest.approx(0.1 * known_count, abs=1)
    train_rows = {row.tobytes() for row in data.train.images[:2000]}
    assert not any(row.tobytes() in train_rows for row in data.val.images)
    train_frac = np.bincount(data.train.labels) / len(data.train)
    val_frac = np.bincount(data.val.labels) / len(data.val)
    np.testing.assert_allclose(train_frac, val_frac, atol=2e-3)


def test_test_set_is_untouched(data, data_dir):
    test = load_dataset("mnist", train=False, root=data_dir)
    assert len(data.test_known) + len(data.test_unknown) == len(test) == 10000


def test_split_is_deterministic_and_seeded(data, data_dir):
    again = open_set_data(DataConfig(), seed=0, root=data_dir)
    other = open_set_data(DataConfig(), seed=1, root=data_dir)
    assert np.array_equal(again.val.images, data.val.images)
    assert not np.array_equal(other.val.images, data.val.images)


def test_other_known_classes(data_dir):
    data = open_set_data(DataConfig(known_classes=(7, 3)), seed=0, root=data_dir)
    assert data.classes == (3, 7)
    assert set(np.unique(data.test_unknown.labels).tolist()) == set(range(10)) - {3, 7}


def test_fashion_mnist_loads(data_dir):
    split = load_dataset("fashion_mnist", train=False, root=data_dir)
    assert len(split) == 10000 and split.images.shape[1:] == (1, 28, 28)


def test_missing_data_offline_is_one_clear_line(tmp_path):
    with pytest.raises(DataNotFoundError) as err:
        load_dataset("mnist", train=True, root=tmp_path, download=False)
    assert "OPENSET_DATA_DIR" in str(err.value) and "\n" not in str(err.value)


def test_data_root_comes_from_the_environment(monkeypatch, data_dir):
    monkeypatch.setenv("OPENSET_DATA_DIR", str(data_dir))
    assert len(load_dataset("mnist", train=False)) == 10000


def test_noise_is_seeded():
    assert np.array_equal(uniform_noise(5, 1).images, uniform_noise(5, 1).images)
    assert not np.array_equal(uniform_noise(5, 1).images, uniform_noise(5, 2).images)


def test_data_root_falls_back_to_shared_data_beside_the_repository_then_the_cache(monkeypatch, tmp_path):
    import openset.data as data

    monkeypatch.delenv("OPENSET_DATA_DIR", raising=False)
    beside = tmp_path / "shared" / "data"
    monkeypatch.setattr(data, "BESIDE_REPOSITORY", beside)
    monkeypatch.setattr(data, "DOWNLOAD_CACHE", tmp_path / "cache")
    assert data.data_root() == tmp_path / "cache"  # nothing beside the repository
    (beside / "MNIST" / "raw").mkdir(parents=True)
    assert data.data_root() == beside
    assert data.data_root(tmp_path / "mine") == tmp_path / "mine"
    monkeypatch.setenv("OPENSET_DATA_DIR", str(tmp_path / "env"))
    assert data.data_root() == tmp_path / "env"


def test_the_root_in_use_is_named_once(data_dir, capfd):
    import openset.data as data

    data._announce.cache_clear()
    load_dataset("mnist", train=False, root=data_dir)
    load_dataset("fashion_mnist", train=False, root=data_dir)
    assert capfd.readouterr().err == f"data: {data_dir} (--data-dir)\n"

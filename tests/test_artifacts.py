import pytest

from openset.artifacts import atomic_write_bytes, sha256_file, staged_directory


def test_atomic_write_replaces_whole_file(tmp_path):
    target = tmp_path / "a" / "b.bin"
    atomic_write_bytes(target, b"one")
    atomic_write_bytes(target, b"two")
    assert target.read_bytes() == b"two"
    assert [p.name for p in target.parent.iterdir()] == ["b.bin"]


def test_staged_directory_swaps_in_on_success(tmp_path):
    final = tmp_path / "model"
    final.mkdir()
    (final / "old.txt").write_text("old")
    with staged_directory(final) as stage:
        (stage / "new.txt").write_text("new")
        assert not (final / "new.txt").exists()
    assert [p.name for p in final.iterdir()] == ["new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_interrupted_stage_leaves_the_old_directory_untouched(tmp_path):
    final = tmp_path / "model"
    final.mkdir()
    (final / "model.onnx").write_bytes(b"good")
    with pytest.raises(KeyboardInterrupt):
        with staged_directory(final) as stage:
            (stage / "model.onnx").write_bytes(b"half")
            raise KeyboardInterrupt
    assert (final / "model.onnx").read_bytes() == b"good"
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_sha256(tmp_path):
    path = tmp_path / "x"
    path.write_bytes(b"abc")
    assert sha256_file(path) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_artefacts_are_readable_by_others(tmp_path):
    target = tmp_path / "m.bin"
    atomic_write_bytes(target, b"x")
    assert target.stat().st_mode & 0o044 == 0o044  # group/other read (umask 022 or laxer)
    with staged_directory(tmp_path / "d") as stage:
        (stage / "f").write_text("y")
    assert (tmp_path / "d").stat().st_mode & 0o055 == 0o055

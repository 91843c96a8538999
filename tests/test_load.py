"""The short CI variant of the load test (``python -m benchmarks.load_test`` runs 64 clients for 60 s)."""

from argparse import Namespace

from benchmarks.load_test import main


def test_mixed_load_with_hot_reloads_has_no_errors_and_drops_nothing(shipped_model_dir, capsys):
    stats = main(Namespace(url=None, model=shipped_model_dir, clients=16, seconds=8.0, reload_every=2.0))
    print(capsys.readouterr().out)
    assert stats["sent"] == stats["answered"] > 200
    assert sum(stats["errors"].values()) == 0, stats["errors"]
    assert len(stats["latency"]) == 6  # every endpoint of the mix was exercised
    assert stats["reloads"] and set(stats["reloads"]) == {200}

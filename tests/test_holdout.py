"""openset holdout: leave-one-known-class-out figures and the shift measurement on known digits, in one log line."""

import argparse
import json

from openset import shifts
from training import experiments, holdout


def test_one_fold_and_the_shift_on_knowns(tmp_path, data_dir, monkeypatch, capsys):
    monkeypatch.setattr(holdout, "SHIFT_PER_CLASS", 2)
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps({"model": {"hidden": [16], "dropout": 0.0}, "optim": {"epochs": 1, "batch_size": 512},
                                  "scores": {"knn_k": 3, "calibration": "clean+augmented"}}))
    log = tmp_path / "log.jsonl"
    args = holdout.get_args_parser().parse_args(
        ["--config", str(config), "--data-dir", str(data_dir), "--folds", "4", "--shift", "--name", "tiny",
         "--log", str(log), "--set", "augment.rotate=20"])
    result = holdout.main(args)
    assert json.loads(log.read_text()) == result == json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["name"] == "tiny" and result["overrides"] == ["augment.rotate=20"] and result["folds"] == [4]
    # Every score, and the combined score's grid of distances and head weights, in both figures.
    grid = {f"combined{d}@{w:g}" for d in holdout.DISTANCES for w in holdout.WEIGHT_GRID}
    for figure in ("mean_auroc", "mean_accepted"):
        assert {"knn", "known_head", "combined"} | grid <= set(result[figure])
        assert all(0.0 <= v <= 1.0 for v in result[figure].values())
    assert result["mean_auroc"]["knn"] > 0.7  # one epoch of a tiny network already tells a held-out digit apart
    # The shipped score fold by fold (here the one fold), its FPR at 95 % TPR, and the worst fold.
    assert set(result["mean_fpr95"]) == set(result["mean_auroc"])
    assert result["shipped_folds"] == {"4": {"auroc": result["mean_auroc"]["combined"],
                                             "fpr95": result["mean_fpr95"]["combined"],
                                             "accepted": result["mean_accepted"]["combined"]}}
    assert result["shipped_worst"] == {"auroc": result["mean_auroc"]["combined"],
                                       "fpr95": result["mean_fpr95"]["combined"]}
    assert 0.0 <= result["mean_fpr95"]["combined"] <= 1.0
    assert {"knn10/all", "knn5/8192"} <= set(result["mean_auroc"])
    # A lower threshold (accepting more known digits) accepts more of the held-out class too.
    for how in ("clean", "clean+augmented"):
        accepted = [result["mean_combined_accepted_at"][f"{how}@{tpr:g}"] for tpr in holdout.TPR_GRID]
        assert accepted == sorted(accepted)
    # The config's calibration is the one of the shipped score's own figure.
    assert result["mean_accepted"]["combined"] == result["mean_combined_accepted_at"]["clean+augmented@0.95"]
    shift = result["shift_knowns"]
    assert set(shift["changes"]) == {n for n, c in shifts.CHANGES.items() if c.group == "tuning"}
    assert shift["worst_right"] == min(shift["changes"].values()) <= shift["mean_right"]
    keys = [f"{how}@{tpr:g}" for how in ("clean", "clean+augmented") for tpr in holdout.TPR_GRID]
    assert set(shift["at"]) == set(keys)
    for how in ("clean", "clean+augmented"):
        means = [shift["at"][f"{how}@{tpr:g}"]["mean"] for tpr in holdout.TPR_GRID]
        assert means == sorted(means)
    assert shift["at"]["clean+augmented@0.95"]["mean"] == shift["mean_right"]
    # The log becomes the table of docs/experiments.md, between its markers, the rest of the page kept.
    doc = tmp_path / "experiments.md"
    doc.write_text(f"intro\n{experiments.BEGIN}\nold table\n{experiments.END}\nnotes\n")
    experiments.main(argparse.Namespace(log=str(log), doc=str(doc)))
    text = doc.read_text()
    assert text.startswith("intro\n") and text.endswith("notes\n") and "old table" not in text
    [row] = [line for line in text.splitlines() if line.startswith("| **tiny**")]
    assert f"{result['mean_auroc']['combined']:.4f} / {result['mean_auroc']['knn']:.4f}" in row
    assert f"| {result['mean_fpr95']['combined']:.3f} / {result['shipped_worst']['fpr95']:.3f} |" in row
    assert f"{100 * shift['mean_right']:.1f} / {100 * shift['worst_right']:.1f}" in row

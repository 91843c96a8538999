"""The experiment log of ``openset holdout --log`` as the table of ``docs/experiments.md``.

One row per variant: the holdout (known digits only: AUROC of the shipped score, of kNN and of the head, the shipped
score's FPR at 95 % TPR on the mean and the worst fold, the held-out digit accepted at the shipped threshold, the
best cell of the combined score's grid) and the shift
benchmark on known digits (right answers: clean, mean and worst of the tuning changes, at the config's
calibration and at the other one). Digits 5-9 appear nowhere in it.

    python -m training.experiments runs/experiments.jsonl --doc docs/experiments.md
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

BEGIN, END = "<!-- experiments:begin -->", "<!-- experiments:end -->"
HEADER = ("| variant | holdout AUROC: combined / kNN / head | FPR at 95 % TPR: mean / worst fold | held-out digit "
          "accepted | best combined (grid) | shift on knowns, right: clean / mean / worst | mean / worst with "
          "`clean+augmented` | min |")


def _pct(value: float) -> str:
    return f"{100 * value:.1f}"


def row(result: dict) -> str:
    auroc, accepted = result["mean_auroc"], result["mean_accepted"]
    grid = {k: v for k, v in auroc.items() if k.startswith("combined") and "@" in k}
    best = max(grid, key=grid.get) if grid else None
    cells = [f"**{result['name']}**<br>`{' '.join(result['overrides']) or '(config as it is)'}`"]
    cells.append(" / ".join(f"{auroc[k]:.4f}" for k in ("combined", "knn", "known_head")) if auroc else "–")
    worst = result.get("shipped_worst")  # (logs from before the figure have none)
    cells.append(f"{result['mean_fpr95']['combined']:.3f} / {worst['fpr95']:.3f}" if worst else "–")
    cells.append(f"{_pct(accepted['combined'])} %" if accepted else "–")
    cells.append(f"{best} {grid[best]:.4f}" if best else "–")
    shift = result.get("shift_knowns")
    if shift:
        cells.append(f"{_pct(shift['clean_right'])} / {_pct(shift['mean_right'])} / {_pct(shift['worst_right'])}")
        other = shift["at"].get("clean+augmented@0.95")
        cells.append(f"{_pct(other['mean'])} / {_pct(other['worst'])}" if other else "–")
    else:
        cells += ["–", "–"]
    cells.append(f"{result['seconds'] / 60:.1f}")
    return "| " + " | ".join(cells) + " |"


def table(results: list[dict]) -> str:
    return "\n".join([HEADER, "|---" * HEADER.count(" | ") + "|---|", *map(row, results)])


def main(args: argparse.Namespace) -> str:
    results = [json.loads(line) for line in Path(args.log).read_text().splitlines() if line.strip()]
    text = table(results)
    if args.doc:
        doc = Path(args.doc)
        before, _, rest = doc.read_text().partition(BEGIN)
        _, _, after = rest.partition(END)
        doc.write_text(f"{before}{BEGIN}\n{text}\n{END}{after}")
    print(text)
    return text


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("log", help="the JSON lines of openset holdout --log")
    parser.add_argument("--doc", default=None, help="replace the table between the markers of this Markdown file")
    main(parser.parse_args())

"""Report figures. Each function draws one PNG from plain arrays and returns its path."""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: figures go to files only
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import ConfusionMatrixDisplay  # noqa: E402

from openset import metrics  # noqa: E402
from openset.artifacts import atomic_write_bytes  # noqa: E402


def _save(fig, path: Path) -> Path:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def learning_curves(history: list[dict], path: Path) -> Path:
    epochs = [row["epoch"] for row in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.8))
    ax_loss.plot(epochs, [r["train_loss"] for r in history], label="train (total loss)")
    ax_loss.plot(epochs, [r["val_loss"] for r in history], label="validation (cross-entropy)")
    ax_acc.plot(epochs, [r["train_acc"] for r in history], label="train (augmented)")
    ax_acc.plot(epochs, [r["val_acc"] for r in history], label="validation")
    for ax, title in ((ax_loss, "loss"), (ax_acc, "known-class accuracy")):
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
    return _save(fig, path)


def roc_curves(scores: dict[str, tuple[np.ndarray, np.ndarray]], title: str, path: Path) -> Path:
    """``scores[name] = (known_scores, unknown_scores)``; one curve per score."""
    fig, ax = plt.subplots(figsize=(5.5, 5))
    for name, (known, unknown) in scores.items():
        fpr, tpr = metrics.roc_curve(known, unknown)
        ax.plot(fpr, tpr, label=f"{name} ({metrics.auroc(known, unknown):.4f})",
                linewidth=2.2 if name == "combined" else 1.0)
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":")
    ax.set(xlabel="unknowns accepted (FPR)", ylabel="knowns accepted (TPR)", title=f"ROC, known vs {title}")
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def score_histograms(known: np.ndarray, unknowns: dict[str, np.ndarray], threshold: float, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7, 4))
    everything = np.concatenate([known, *unknowns.values()])
    bins = np.linspace(np.percentile(everything, 0.5), everything.max(), 80)
    ax.hist(np.clip(known, bins[0], None), bins=bins, alpha=0.6, density=True, label="known (test)")
    for name, values in unknowns.items():
        ax.hist(np.clip(values, bins[0], None), bins=bins, alpha=0.45, density=True, label=name)
    ax.axvline(threshold, color="black", linestyle="--", label=f"threshold {threshold:.3f}")
    ax.set(xlabel="combined score (higher = more known)", ylabel="density", title="score distributions")
    ax.legend(fontsize=8)
    return _save(fig, path)


def confusion(matrix: list[list[int]], labels: list[str], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6, 5.2))
    ConfusionMatrixDisplay(np.asarray(matrix), display_labels=labels).plot(ax=ax, colorbar=False, values_format="d")
    ax.set_title("open-set confusion matrix (test)")
    return _save(fig, path)


def image_grid(images: np.ndarray, titles: list[str], path: Path, columns: int = 10) -> Path:
    """``images`` ``[N, 1, side, side]`` or ``[N, side, side]`` in [0, 1]."""
    rows = max(1, -(-len(images) // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(columns * 1.1, rows * 1.3), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, title in zip(axes.flat, images, titles, strict=False):
        ax.imshow(np.squeeze(np.asarray(image)), cmap="gray", vmin=0, vmax=1)
        ax.set_title(title, fontsize=7)
    return _save(fig, path)


def compare_curves(histories: dict[str, list[dict]], title: str, path: Path) -> Path:
    """Validation accuracy and loss per epoch, every run on one plot."""
    fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(11, 4))
    for name, history in histories.items():
        epochs = [row["epoch"] for row in history]
        ax_acc.plot(epochs, [row["val_acc"] for row in history], label=name)
        ax_loss.plot(epochs, [row["val_loss"] for row in history], label=name)
    for ax, what in ((ax_acc, "validation accuracy"), (ax_loss, "validation loss")):
        ax.set(xlabel="epoch", title=f"{title}: {what}")
        ax.grid(alpha=0.3)
    ax_acc.legend(fontsize=7)
    return _save(fig, path)


def compare_bars(figures: dict[str, dict[str, float]], title: str, path: Path) -> Path:
    """Grouped bars: ``figures[run][metric]``."""
    runs = list(figures)
    names = list(next(iter(figures.values())))
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(runs)), 4))
    width = 0.8 / len(names)
    for i, metric in enumerate(names):
        ax.bar(np.arange(len(runs)) + i * width, [figures[r][metric] for r in runs], width, label=metric)
    low = min(v for run in figures.values() for v in run.values())
    ax.set_ylim(max(0.0, low - 0.02), 1.0)
    ax.set_xticks(np.arange(len(runs)) + width * (len(names) - 1) / 2, runs, rotation=30, ha="right", fontsize=8)
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    return _save(fig, path)


def shift_examples(rows: dict[str, list[tuple[np.ndarray, np.ndarray]]], path: Path) -> Path:
    """One row per change: at each severity, the picture a person sends and the model's input made from it."""
    columns = max(len(pairs) for pairs in rows.values()) * 2
    fig, axes = plt.subplots(len(rows), columns, figsize=(columns * 0.95, len(rows) * 1.05), squeeze=False,
                             layout="constrained")
    for ax in axes.flat:
        ax.axis("off")
    for r, (name, pairs) in enumerate(rows.items()):
        axes[r, 0].set_title(name, fontsize=7, loc="left")
        for c, (picture, model_input) in enumerate(pairs):
            axes[r, 2 * c].imshow(picture, cmap=None if picture.ndim == 3 else "gray", vmin=0, vmax=1)
            axes[r, 2 * c + 1].imshow(model_input, cmap="gray", vmin=0, vmax=1)
    fig.suptitle("shift benchmark: picture sent (severities 1-3) | model input after the service's preprocessing",
                 fontsize=9)
    return _save(fig, path)


def shift_bars(result: dict, path: Path) -> Path:
    """Per change (mean over severities): knowns answered right and unknowns answered "other"."""
    names = ["clean", *result["changes"]]
    rows = [result["clean"], *(c["mean"] for c in result["changes"].values())]
    shown = [k for k in ("known_right", "unknown_refused") if k in rows[0]]
    fig, ax = plt.subplots(figsize=(max(7, 0.55 * len(names)), 4))
    width = 0.8 / len(shown)
    for i, key in enumerate(shown):
        ax.bar(np.arange(len(names)) + i * width, [row[key] for row in rows], width, label=key.replace("_", " "))
    held_out = [i for i, name in enumerate(names) if name != "clean" and result["changes"][name]["group"] == "held_out"]
    if held_out:
        ax.axvspan(min(held_out) - 0.3, max(held_out) + 0.9, color="grey", alpha=0.12, label="held-out changes")
    ax.set_xticks(np.arange(len(names)) + width * (len(shown) - 1) / 2, names, rotation=40, ha="right", fontsize=8)
    ax.set_ylim(min(0.5, min(row[k] for row in rows for k in shown) - 0.05), 1.0)
    ax.set_title("shift benchmark (mean over severities 1-3)")
    ax.legend(fontsize=8, loc="lower left")
    ax.grid(alpha=0.3, axis="y")
    return _save(fig, path)

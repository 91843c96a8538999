"""Resumable training: the state after every epoch, written atomically outside the artefact directory.

``runs/checkpoints/<config name>/last.pt`` holds everything that decides the rest of a run, so that
``openset train --resume`` continues at the next epoch and ends bit-identical to a run that was
never interrupted. The artefact directory (``--out``) is written only once, at the very end, by
:func:`training.pipeline.write_artifacts`; an interrupt therefore never leaves anything there. An artefact's
own ``checkpoint.pt`` has the same format with the chosen weights only (:func:`model_checkpoint`).

Randomness during training comes from exactly two sources, both captured: torch's global RNG
(weight init, dropout) and the run's ``torch.Generator`` (batch order, augmentation, negatives).
numpy and ``random`` are not used while training (the score fitting afterwards is seeded).
"""

from __future__ import annotations

import io
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from openset.artifacts import atomic_write_bytes
from openset.config import Config, ConfigError

CHECKPOINT_ROOT = Path("runs") / "checkpoints"
CHECKPOINT_NAME = "last.pt"
FORMAT = 1


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM during ``openset train``; the message says how to resume.

    A KeyboardInterrupt so that every ``except BaseException`` clean-up (atomic writes, the staged
    artefact directory) runs exactly as for Ctrl-C.
    """

    def __init__(self, message: str = "", signum: int = signal.SIGINT) -> None:
        super().__init__(message)
        self.signum = int(signum)


def raise_on_sigterm(signum: int, frame: Any) -> None:
    """Signal handler: treat SIGTERM (docker stop, kill, a scheduler) like Ctrl-C."""
    raise TrainingInterrupted(signum=signum)


@dataclass
class TrainState:
    """The mutable state of a run between epochs; ``epoch`` is the last completed one."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    gen: torch.Generator
    epoch: int = 0
    history: list[dict] = field(default_factory=list)
    # Best model so far by (validation accuracy, -validation loss); fit returns it at the end.
    best_key: tuple[float, float] | None = None
    best_state: dict[str, torch.Tensor] | None = None

    def state_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "history": self.history,
            "best_key": self.best_key,
            "best_state": self.best_state,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": {"torch": torch.get_rng_state(), "generator": self.gen.get_state()},
        }

    def load_state_dict(self, payload: dict[str, Any]) -> None:
        """Restore a checkpoint into freshly built objects (model, optimizer, scheduler, generator)."""
        self.epoch = payload["epoch"]
        self.history = list(payload["history"])
        self.best_key = tuple(payload["best_key"]) if payload["best_key"] is not None else None
        self.best_state = payload["best_state"]
        self.model.load_state_dict(payload["model"])
        self.optimizer.load_state_dict(payload["optimizer"])
        self.scheduler.load_state_dict(payload["scheduler"])
        # Last, so that nothing above (building the model draws its initial weights) moves them on.
        torch.set_rng_state(payload["rng"]["torch"])
        self.gen.set_state(payload["rng"]["generator"])


def checkpoint_path(cfg: Config, directory: str | Path | None = None) -> Path:
    """``<directory>/last.pt``; by default ``runs/checkpoints/<config name>/last.pt``."""
    return Path(directory if directory is not None else CHECKPOINT_ROOT / cfg.name) / CHECKPOINT_NAME


def checkpoint_bytes(cfg: Config, payload: dict[str, Any]) -> bytes:
    """The one checkpoint format: ``format``, ``config`` and the payload (a run's state, or a model's weights)."""
    buffer = io.BytesIO()
    torch.save({"format": FORMAT, "config": cfg.to_dict(), **payload}, buffer)
    return buffer.getvalue()


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint written by :func:`checkpoint_bytes`, refused (one-line error) if missing or foreign."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a truncated or foreign file fails in many ways inside torch.load
        raise ConfigError(f"checkpoint {path} is unreadable ({type(err).__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ConfigError(f"checkpoint {path} is not an openset checkpoint (format {FORMAT})")
    return payload


def save_checkpoint(path: Path, cfg: Config, state: TrainState) -> None:
    atomic_write_bytes(path, checkpoint_bytes(cfg, state.state_dict()))


def model_checkpoint(cfg: Config, model: nn.Module, history: list[dict], side: int) -> bytes:
    """An artefact's ``checkpoint.pt``: the trained weights, the history and the input side."""
    return checkpoint_bytes(cfg, {"model": model.state_dict(), "history": history, "side": side})


def load_model(path: str | Path) -> tuple[Config, nn.Module, list[dict]]:
    """The config, the model (eval mode) and the history from an artefact's ``checkpoint.pt``."""
    from openset.models import build_model

    payload = read_checkpoint(path)
    cfg = Config.model_validate(payload["config"])
    model = build_model(cfg.model, len(cfg.data.known_classes), payload["side"])
    model.load_state_dict(payload["model"])
    return cfg, model.eval(), payload["history"]


def file_identity(path: Path) -> int | None:
    """The inode of ``path`` (None if absent); every atomic save makes a new one."""
    try:
        return path.stat().st_ino
    except FileNotFoundError:
        return None


def epoch_saved_since(path: Path, identity: int | None) -> int | None:
    """The epoch in ``path`` if it was saved after ``identity`` was taken (else None).

    Read from the file, not tracked in memory: an interrupt can land between the rename of a new
    checkpoint and any bookkeeping after it.
    """
    if file_identity(path) in (None, identity):
        return None
    return int(torch.load(path, map_location="cpu", weights_only=True)["epoch"])


def load_checkpoint(path: Path, cfg: Config) -> dict[str, Any]:
    """The checkpoint at ``path``, refused (one-line error) if it is missing or was made by another config."""
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint to resume at {path}; train without --resume to start a new run")
    payload = read_checkpoint(path)
    if "optimizer" not in payload:
        raise ConfigError(f"checkpoint {path} holds a trained model, not a run's state; it cannot be resumed")
    changed = _differences(payload["config"], cfg.to_dict())
    if changed:
        shown = "; ".join(f"{key}: {old!r} -> {new!r}" for key, old, new in changed[:3])
        more = f" and {len(changed) - 3} more" if len(changed) > 3 else ""
        raise ConfigError(
            f"cannot resume {path}: the config differs from the checkpoint's ({shown}{more}); "
            "rerun with the same config, or without --resume to start over"
        )
    return payload


def _differences(old: dict, new: dict, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """Dotted keys whose values differ, e.g. ``[("optim.epochs", 3, 5)]``."""
    found = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            found += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            found.append((f"{prefix}{key}", a, b))
    return found

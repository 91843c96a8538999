"""Train the open-set MLP, then fit its scores, calibrate, evaluate and export (``openset train``).

Laid out like torchvision's reference scripts: ``get_args_parser()``, ``main(args)``, and a
plain loop of ``train_one_epoch`` / ``evaluate`` you can read top to bottom. The state after every
epoch goes to a checkpoint outside ``--out`` (:mod:`training.checkpoints`) for ``--resume``.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from openset.augment import augment
from openset.characters import glyph_bank
from openset.config import Config, OptimConfig
from openset.data import DATA_DIR_HELP, OpenSetData, Split, load_dataset, open_set_data
from openset.models import ModelOutput, build_model, known_rows, members
from openset.negatives import NegativeSampler
from openset.outliers import VirtualOutliers
from training.checkpoints import (
    TrainingInterrupted,
    TrainState,
    checkpoint_path,
    epoch_saved_since,
    file_identity,
    load_checkpoint,
    raise_on_sigterm,
    save_checkpoint,
)
from training.pipeline import write_artifacts

OPTIMIZERS = {
    "sgd": lambda params, c: torch.optim.SGD(params, lr=c.lr, weight_decay=c.weight_decay),
    "momentum": lambda params, c: torch.optim.SGD(
        params, lr=c.lr, momentum=0.9, nesterov=True, weight_decay=c.weight_decay
    ),
    "adagrad": lambda params, c: torch.optim.Adagrad(params, lr=c.lr, weight_decay=c.weight_decay),
    "rmsprop": lambda params, c: torch.optim.RMSprop(params, lr=c.lr, weight_decay=c.weight_decay),
    "adam": lambda params, c: torch.optim.Adam(params, lr=c.lr, weight_decay=c.weight_decay),
    "adamw": lambda params, c: torch.optim.AdamW(params, lr=c.lr, weight_decay=c.weight_decay),
}

SCHEDULES = {
    "constant": lambda opt, c, steps: torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0),
    "cosine": lambda opt, c, steps: torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps),
    "step": lambda opt, c, steps: torch.optim.lr_scheduler.StepLR(
        opt, step_size=max(1, steps // 3), gamma=0.1
    ),
}


def build_optimizer(model: nn.Module, cfg: OptimConfig, steps: int):
    optimizer = OPTIMIZERS[cfg.name](model.parameters(), cfg)
    return optimizer, SCHEDULES[cfg.schedule](optimizer, cfg, steps)


def negative_pool(cfg: Config, data: OpenSetData, root: str | None) -> torch.Tensor | None:
    """Images for the ``auxiliary:*`` and ``supervised`` negative sources (None otherwise)."""
    kind, _, dataset = cfg.negatives.source.partition(":")
    if kind == "supervised":
        return torch.from_numpy(data.train_unknown.images)
    if kind == "auxiliary":
        return torch.from_numpy(load_dataset(dataset, train=True, root=root).images)
    return None


def negative_sampler(cfg: Config, data: OpenSetData, root: str | None) -> NegativeSampler:
    """The config's negatives; the ``characters`` kind's glyphs exclude the look-alikes of the config's known
    classes (not a holdout fold's: a held-out 0 is still no reason to draw an O)."""
    glyphs = None
    if "characters" in cfg.negatives.kinds:
        glyphs = torch.from_numpy(glyph_bank(cfg.data.known_classes, seed=cfg.seed))
    return NegativeSampler(cfg.negatives, negative_pool(cfg, data, root), glyphs,
                           cfg.augment if cfg.data.augment else None)


def train_one_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler,
    train: Split,
    sampler: NegativeSampler,
    cfg: Config,
    gen: torch.Generator,
    epoch: int,
) -> dict[str, float]:
    model.train()
    virtual = VirtualOutliers(cfg.outliers, members(model)[0].classifier.out_features) \
        if cfg.outliers.weight and epoch >= cfg.outliers.start_epoch else None
    all_images, all_labels = torch.from_numpy(train.images), torch.from_numpy(train.labels)
    order = torch.randperm(len(train), generator=gen)
    batches = order.split(cfg.optim.batch_size)
    totals = {"loss": 0.0, "correct": 0, "seen": 0}
    bar = tqdm(batches, desc=f"epoch {epoch}", leave=False, disable=not sys.stderr.isatty())
    for index in bar:
        raw, labels = all_images[index], all_labels[index]
        images = augment(raw, cfg.augment, gen) if cfg.data.augment else raw
        negatives = sampler.sample(images, labels, gen) if sampler.enabled else images[:0]
        if cfg.contrastive.weight:  # a second view of every digit
            second = augment(raw, cfg.augment, gen) if cfg.data.augment else raw
            images, labels = torch.cat([images, second]), torch.cat([labels, labels])
        known = len(images)
        # An ensemble's members each learn from their own outputs (the same batch), never from the average.
        batch = torch.cat([images, negatives])
        with known_rows(model, known):  # (norm "known": batch norm's statistics are the known digits')
            outputs = [member(batch) for member in members(model)]
        loss = sum(batch_loss(output, labels, known, sampler.enabled, cfg) for output in outputs)
        if virtual is not None:  # (one network: config-checked)
            if virtual.ready:
                loss = loss + cfg.outliers.weight * outlier_loss(model, virtual.sample(gen), cfg)
            virtual.remember(outputs[0].embedding[:known], labels)
        logits = outputs[0].logits  # the training accuracy shown is the first member's
        if cfg.optim.l1:
            loss = loss + cfg.optim.l1 * sum(p.abs().sum() for n, p in model.named_parameters() if "weight" in n)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        totals["loss"] += loss.item() * known
        totals["correct"] += (logits[:known].argmax(1) == labels).sum().item()
        totals["seen"] += known
        bar.set_postfix(loss=f"{totals['loss'] / totals['seen']:.4f}", acc=f"{totals['correct'] / totals['seen']:.4f}")
    return {"train_loss": totals["loss"] / totals["seen"], "train_acc": totals["correct"] / totals["seen"]}


def batch_loss(output: ModelOutput, labels: torch.Tensor, known: int, negatives: bool, cfg: Config) -> torch.Tensor:
    """One network's loss on a batch of ``known`` labelled digits followed by negatives."""
    logits, embedding, _, head_logits = output
    loss = F.cross_entropy(logits[:known], labels)
    if cfg.contrastive.weight:
        loss = loss + cfg.contrastive.weight * supcon_loss(embedding[:known], labels, cfg.contrastive.temperature)
    if negatives:
        loss = loss + cfg.negatives.head_weight * head_loss(head_logits, labels, len(logits) - known)
        if cfg.negatives.uniform_weight:
            # Outlier exposure: the softmax of a negative should be flat.
            uniform = -F.log_softmax(logits[known:], dim=1).mean()
            loss = loss + cfg.negatives.uniform_weight * uniform
    return loss


def outlier_loss(model: nn.Module, virtual: torch.Tensor, cfg: Config) -> torch.Tensor:
    """The known head's loss on virtual outliers (embeddings, ``openset.outliers``): every head says unknown, and the
    softmax is pulled flat as for the negatives."""
    loss = head_loss(model.known_head(virtual), torch.zeros(0, dtype=torch.long), len(virtual))
    if cfg.negatives.uniform_weight:
        loss = loss + cfg.negatives.uniform_weight * -F.log_softmax(model.classifier(virtual), dim=1).mean()
    return loss


def supcon_loss(embedding: torch.Tensor, labels: torch.Tensor, temperature: float) -> torch.Tensor:
    """Supervised contrastive loss (Khosla et al. 2020, "L_out"): for every sample, minus the mean log-probability
    of picking a sample of its own class among all the others, by cosine similarity / temperature."""
    z = F.normalize(embedding, dim=1)
    logits = z @ z.T / temperature
    self_mask = torch.eye(len(z), dtype=torch.bool)
    logits = logits.masked_fill(self_mask, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    positive = (labels[:, None] == labels[None, :]) & ~self_mask
    per_sample = -(log_prob.masked_fill(~positive, 0.0)).sum(1) / positive.sum(1).clamp_min(1)
    return per_sample.mean()


def head_loss(head_logits: torch.Tensor, labels: torch.Tensor, negatives: int) -> torch.Tensor:
    """Binary cross-entropy of the known head: knowns first in the batch, then the negatives.

    A single head learns known (1) vs negative (0); one-vs-rest heads learn their own class (1)
    against the other known classes and every negative (0).
    """
    if head_logits.shape[1] == 1:
        target = torch.cat([torch.ones(len(labels)), torch.zeros(negatives)])[:, None]
    else:
        target = torch.cat([F.one_hot(labels, head_logits.shape[1]).float(),
                            torch.zeros(negatives, head_logits.shape[1])])
    return F.binary_cross_entropy_with_logits(head_logits, target)


@torch.no_grad()
def evaluate(model: nn.Module, split: Split, batch_size: int = 4096) -> dict[str, float]:
    """Loss and accuracy on a known-class split (labels 0..K-1)."""
    model.eval()
    loss, correct = 0.0, 0
    for start in range(0, len(split), batch_size):
        images = torch.from_numpy(split.images[start : start + batch_size])
        labels = torch.from_numpy(split.labels[start : start + batch_size])
        logits = model(images).logits
        loss += F.cross_entropy(logits, labels, reduction="sum").item()
        correct += (logits.argmax(1) == labels).sum().item()
    return {"loss": loss / len(split), "acc": correct / len(split)}


def fit(
    cfg: Config, data: OpenSetData, root: str | None = None, on_epoch: Callable[[dict], None] | None = None,
    checkpoint: Path | None = None, resume: dict | None = None,
) -> tuple[nn.Module, list[dict]]:
    """Train with the config; return the best-validation model (known classes only) and the history.

    ``on_epoch`` sees each epoch's row (e.g. to prune a hyper-parameter trial); it may raise to stop.
    ``checkpoint``: write the whole training state there after every epoch (before ``on_epoch``);
    ``resume``: a loaded checkpoint (:func:`training.checkpoints.load_checkpoint`) to continue from.
    """
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    model = build_model(cfg.model, len(data.classes), data.train.images.shape[-1])
    sampler = negative_sampler(cfg, data, root)
    steps = cfg.optim.epochs * -(-len(data.train) // cfg.optim.batch_size)
    optimizer, scheduler = build_optimizer(model, cfg.optim, steps)
    state = TrainState(model, optimizer, scheduler, gen)
    if resume is not None:
        state.load_state_dict(resume)
        print(f"resuming after epoch {state.epoch}/{cfg.optim.epochs}", flush=True)
    for epoch in range(state.epoch + 1, cfg.optim.epochs + 1):
        start = time.perf_counter()
        row = {"epoch": epoch, **train_one_epoch(model, optimizer, scheduler, data.train, sampler, cfg, gen, epoch)}
        val = evaluate(model, data.val)
        # No clock time in the history: it goes into the artefact, which must not change between identical runs.
        row.update(val_loss=val["loss"], val_acc=val["acc"])
        seconds = time.perf_counter() - start
        state.history.append(row)
        # Best checkpoint by known-class validation accuracy, ties broken by validation loss.
        key = (val["acc"], -val["loss"])
        if state.best_key is None or key > state.best_key:
            state.best_key, state.best_state = key, copy.deepcopy(model.state_dict())
        state.epoch = epoch
        if checkpoint is not None:
            save_checkpoint(checkpoint, cfg, state)
        print(
            f"epoch {epoch:3d}/{cfg.optim.epochs}  loss {row['train_loss']:.4f}  acc {row['train_acc']:.4f}  "
            f"val_loss {row['val_loss']:.4f}  val_acc {row['val_acc']:.4f}  ({seconds:.1f}s)",
            flush=True,
        )
        if on_epoch is not None:
            on_epoch(row)
    model.load_state_dict(state.best_state)
    return model.eval(), state.history


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Train, evaluate and export an open-set model", add_help=add_help)
    parser.add_argument("--config", required=True, help="training config (JSON)")
    parser.add_argument("--out", required=True, help="artefact directory (written atomically)")
    parser.add_argument("--data-dir", default=None, help=DATA_DIR_HELP)
    parser.add_argument("--epochs", type=int, default=None, help="override optim.epochs (quick runs)")
    parser.add_argument("--seed", type=int, default=None, help="override the config's seed")
    parser.add_argument("--no-plots", action="store_true", help="skip the figures")
    parser.add_argument(
        "--checkpoint-dir", default=None,
        help="where the training state is saved after every epoch as last.pt (default: "
             "runs/checkpoints/<config name>); deleted once the artefacts are written",
    )
    parser.add_argument(
        "--resume", action="store_true",
        help="continue an interrupted run from its last.pt (same config, --epochs and --seed); the result is "
             "identical to an uninterrupted run",
    )
    return parser


def main(args: argparse.Namespace) -> Path:
    started = time.perf_counter()
    cfg = Config.from_json(args.config)
    if args.epochs is not None:
        cfg = cfg.override(optim={"epochs": args.epochs})
    if args.seed is not None:
        cfg = cfg.override(seed=args.seed)
    checkpoint = checkpoint_path(cfg, args.checkpoint_dir)
    # Checked before the data is loaded, so a wrong --resume fails at once.
    resume = load_checkpoint(checkpoint, cfg) if args.resume else None
    if resume is None and checkpoint.exists():
        print(f"note: starting over; the unfinished run's state in {checkpoint} will be replaced "
              "(use --resume to continue it)", file=sys.stderr)
    before = file_identity(checkpoint)

    on_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, raise_on_sigterm) if on_main_thread else None
    try:
        data = open_set_data(cfg.data, cfg.seed, args.data_dir)
        model, history = fit(cfg, data, args.data_dir, checkpoint=checkpoint, resume=resume)
        out = write_artifacts(Path(args.out), cfg, model, history, data, args.data_dir,
                              plots_enabled=not args.no_plots)
    except KeyboardInterrupt as err:
        signum = getattr(err, "signum", signal.SIGINT)
        done = epoch_saved_since(checkpoint, before) or (resume["epoch"] if resume else 0)
        if done:
            message = (f"after epoch {done}/{cfg.optim.epochs}; state saved in {checkpoint}, "
                       f"rerun with --resume to continue")
        else:
            message = "before epoch 1 ended; nothing saved"
        raise TrainingInterrupted(f"{message}; {args.out} not touched", signum) from None
    finally:
        if on_main_thread:
            signal.signal(signal.SIGTERM, previous or signal.SIG_DFL)
    # The run is complete: drop its state so that a later --resume cannot silently reuse it.
    checkpoint.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        checkpoint.parent.rmdir()  # only if empty
    minutes, seconds = divmod(round(time.perf_counter() - started), 60)
    print(f"done in {minutes} min {seconds:02d} s (data, training, scores, evaluation, export, report)")
    return out

"""Re-export a trained checkpoint (``openset export``): refit the scores, recalibrate, evaluate, write.

``--set scores.knn_bank=2048`` refits them, ``--set export.weights=nbits8`` stores the graph's weights in 8 bits: the
sections that do not change the trained weights (:data:`REFIT`). The artefact and its checkpoint record the config
they were made with.

    openset export --checkpoint models/mnist-0to4/checkpoint.pt --out runs/refit [--set scores.knn_k=5]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from openset.config import ConfigError, parse_overrides
from openset.data import DATA_DIR_HELP, open_set_data
from training.checkpoints import load_model
from training.pipeline import write_artifacts

REFIT = ("scores", "evaluation", "export")  # the sections a re-export may change: training does not read them


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Export a checkpoint to ONNX with a fresh report", add_help=add_help)
    parser.add_argument("--checkpoint", required=True, help="checkpoint.pt written by 'openset train'")
    parser.add_argument("--out", required=True, help="artefact directory (written atomically)")
    parser.add_argument("--data-dir", default=None, help=DATA_DIR_HELP)
    parser.add_argument("--set", nargs="*", default=[], metavar="SECTION.FIELD=VALUE",
                        help=f"override the checkpoint's config in {' or '.join(REFIT)}, e.g. scores.knn_k=5")
    parser.add_argument("--no-plots", action="store_true", help="skip the figures")
    return parser


def main(args: argparse.Namespace) -> Path:
    overrides = parse_overrides(args.set)
    if fixed := sorted(set(overrides) - set(REFIT)):
        raise ConfigError(f"--set can change {', '.join(REFIT)} only (the weights were trained with the rest): "
                          f"{', '.join(fixed)}")
    cfg, model, history = load_model(args.checkpoint)
    cfg = cfg.override(**overrides)
    data = open_set_data(cfg.data, cfg.seed, args.data_dir)
    start = time.perf_counter()
    out = write_artifacts(Path(args.out), cfg, model, history, data, args.data_dir, plots_enabled=not args.no_plots)
    print(f"exported in {time.perf_counter() - start:.0f} s")
    return out

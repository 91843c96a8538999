"""Re-export a trained checkpoint (``openset export``): refit the scores, recalibrate, evaluate, write."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from openset.data import DATA_DIR_HELP, open_set_data
from training.checkpoints import load_model
from training.pipeline import write_artifacts


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Export a checkpoint to ONNX with a fresh report", add_help=add_help)
    parser.add_argument("--checkpoint", required=True, help="checkpoint.pt written by 'openset train'")
    parser.add_argument("--out", required=True, help="artefact directory (written atomically)")
    parser.add_argument("--data-dir", default=None, help=DATA_DIR_HELP)
    parser.add_argument("--no-plots", action="store_true", help="skip the figures")
    return parser


def main(args: argparse.Namespace) -> Path:
    cfg, model, history = load_model(args.checkpoint)
    data = open_set_data(cfg.data, cfg.seed, args.data_dir)
    start = time.perf_counter()
    out = write_artifacts(Path(args.out), cfg, model, history, data, args.data_dir, plots_enabled=not args.no_plots)
    print(f"exported in {time.perf_counter() - start:.0f} s")
    return out

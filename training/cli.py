"""openset: train, evaluate and study open-set digit classifiers (run "openset COMMAND --help").

Only the chosen command's module is imported, when it runs: ``openset --help`` starts at once, and
``openset evaluate`` needs no torch. Errors a user can cause (a bad config, missing data, a missing
file) end with one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
from collections.abc import Sequence

from openset.artifacts import ArtifactError
from openset.config import ConfigError
from openset.data import DataNotFoundError

COMMANDS = {
    "train": ("training.train", "train a model from a JSON config, then evaluate and export it"),
    "evaluate": ("training.evaluate", "re-measure a model directory with ONNX Runtime (no torch needed)"),
    "robustness": ("training.robustness", "the shift benchmark: test digits as people's pictures, changed"),
    "export": ("training.export", "refit scores and export a checkpoint to ONNX"),
    "holdout": ("training.holdout", "leave-one-known-class-out validation of a config"),
    "sweep": ("training.sweep", "run many configs and compare them in a table and figures"),
    "tune": ("training.tune", "hyper-parameter search with Optuna on known-class validation data"),
}
USER_ERRORS = (ConfigError, DataNotFoundError, FileNotFoundError, ArtifactError)


def get_parser(command: str | None) -> argparse.ArgumentParser:
    """Every command listed; only ``command`` (if any) gets its module's options, the others stay unimported."""
    parser = argparse.ArgumentParser(prog="openset", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        parents = [importlib.import_module(module_name).get_args_parser(add_help=False)] if name == command else []
        sub.add_parser(name, help=help_text, description=help_text, parents=parents)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[0] if argv and argv[0] in COMMANDS else None
    args = get_parser(command).parse_args(argv)
    try:
        importlib.import_module(COMMANDS[args.command][0]).main(args)
    except USER_ERRORS as err:
        print(f"openset {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:
        # A command may say what was kept and how to go on (``openset train``: "after epoch 3/20; ...").
        detail = f" {err}" if str(err) else "; nothing was written"
        print(f"openset {args.command}: interrupted{detail}", file=sys.stderr)
        return 128 + getattr(err, "signum", signal.SIGINT)  # the shell's convention: 130 Ctrl-C, 143 SIGTERM
    return 0


if __name__ == "__main__":
    sys.exit(main())

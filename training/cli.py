"""The ``openset`` command: ``train``, ``evaluate``, ``export`` and ``holdout``.

Errors a user can cause (a bad config, missing data, a missing file) end with one line on
stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence

from openset.artifacts import ArtifactError
from openset.config import ConfigError
from openset.data import DataNotFoundError

COMMANDS = {
    "train": ("training.train", "train a model from a JSON config, then evaluate and export it"),
    "evaluate": ("training.evaluate", "re-measure a model directory with ONNX Runtime"),
    "export": ("training.export", "refit scores and export a checkpoint to ONNX"),
    "holdout": ("training.holdout", "leave-one-known-class-out validation of a config"),
    "sweep": ("training.sweep", "run many configs and compare them in a table and figures"),
    "tune": ("training.tune", "hyper-parameter search with Optuna on known-class validation data"),
}
USER_ERRORS = (ConfigError, DataNotFoundError, FileNotFoundError, ArtifactError)


def main(argv: Sequence[str] | None = None) -> int:
    import importlib

    parser = argparse.ArgumentParser(prog="openset", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    modules = {}
    for name, (module_name, help_text) in COMMANDS.items():
        modules[name] = importlib.import_module(module_name)
        sub.add_parser(name, help=help_text, parents=[modules[name].get_args_parser(add_help=False)])
    args = parser.parse_args(argv)
    try:
        modules[args.command].main(args)
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

"""The `mnist-vae` command: use a trained VAE from the shell (sample, reconstruct, encode, decode,
interpolate, traverse, info). Each subcommand has --help; each takes --model as a checkpoint path
(default models/vae.pt), runs:/<run id>/<model name> or models:/<name>/<version>.

Test digits are named by their index in the test set: data/raw/mnist.npz's pixels through
`preprocess` (deterministic, and what a client of the served model sends), or without it
data/processed/test.npz (the pipeline's own dequantized test input, with its noise); --data points
elsewhere. Image files are read as mnist_vae.images.read_digit describes.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional, Sequence

from mnist_vae.api import loading
from mnist_vae.command_line.inputs import TestDigits
from mnist_vae.command_line.output import PROG, note
from mnist_vae.command_line.parser import build_parser
from mnist_vae.command_line.subcommands import COMMANDS
from mnist_vae.errors import FileProblem, UserError
from mnist_vae.pipeline import stage


def cmd_search(args) -> int:
    from mnist_vae.ops import search

    if args.action == "run":
        return search.run(args.workers, args.threads, args.heartbeat, say=note)
    if args.action == "status":
        return search.status()
    return search.dashboard(args.host, args.port, say=note)


def fix_for(exc: UserError, model: Optional[str]) -> str:
    """How to fix `exc` from the shell: the `dvc repro` that makes a pipeline's file, or the --model to pass."""
    hint = stage.fix_for(exc)
    if not hint and isinstance(exc, FileProblem) and model and exc.path == Path(model):
        hint = "; pass --model PATH|runs:/<run id>/<model name>|models:/<name>/<version>"
    return hint


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "search":
            return cmd_search(args)
        model = loading.load(args.model, args.dequantize)
        COMMANDS[args.command](args, model, TestDigits(args.data, model))
    except UserError as exc:
        print(f"{PROG}: error: {exc}{fix_for(exc, getattr(args, 'model', None))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; nothing was written", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

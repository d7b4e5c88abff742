"""The stage runner every stage script calls: logging, params loading, Ctrl-C and SIGTERM, and one-line errors
with a non-zero exit that name the `dvc repro` fixing a missing, unreadable or stale file."""

from __future__ import annotations

import logging
import os
import signal
import sys
from pathlib import Path
from typing import Callable, Optional

import yaml

from mnist_vae.errors import FileProblem, UserError
from mnist_vae.params import Params, load_params

PIPELINE = Path("dvc.yaml")  # beside params.yaml, in the folder the stages run in


def run_stage(name: str, main: Callable[[Params], None], params_path: str = "params.yaml") -> None:
    """Run a stage's `main` on the validated params: exit 2 with `<name>: error: <what>` on a UserError,
    130 on Ctrl-C or SIGTERM (DVC and queue workers stop stages with SIGTERM)."""
    logging.basicConfig(level=logging.INFO, format=f"{name}: %(message)s", stream=sys.stderr)
    signal.signal(signal.SIGTERM, interrupt_as_ctrl_c)
    try:
        main(load_params(params_path))
    except UserError as exc:
        print(f"{name}: error: {exc}{fix_for(exc)}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print(f"{name}: interrupted; no output was written", file=sys.stderr)
        sys.exit(130)


def interrupt_as_ctrl_c(signum, frame):
    """A signal handler that ends the program as Ctrl-C does (KeyboardInterrupt)."""
    raise KeyboardInterrupt(f"signal {signum}")


def fix_for(exc: UserError) -> str:
    """How to fix `exc` in the pipeline ('; run `dvc repro train` to make it'), or '' when no stage makes its file."""
    if not isinstance(exc, FileProblem):
        return ""
    stage = producer(exc.path)
    if stage is None:
        return ""
    if exc.problem == "missing":
        return f"; run `dvc repro {stage}` to make it"
    return f"; rerun `dvc repro {stage}`" if exc.problem == "stale" else f"; rerun `dvc repro -f {stage}`"


def producer(path: Path, pipeline: Path = PIPELINE) -> Optional[str]:
    """The stage of `pipeline` whose declared outputs hold `path` (a file or a folder's file), or None."""
    try:
        stages = (yaml.safe_load(pipeline.read_text()) or {}).get("stages", {})
    except (OSError, yaml.YAMLError):
        return None
    want = os.path.normpath(path)
    for name, stage in stages.items():
        for out in [*stage.get("outs", []), *stage.get("metrics", [])]:
            declared = os.path.normpath(next(iter(out)) if isinstance(out, dict) else out)
            if want == declared or want.startswith(declared + os.sep):
                return name
    return None

"""What every stage script shares: logging, params loading, and one-line errors with a non-zero exit."""

from __future__ import annotations

import logging
import signal
import sys
from typing import Callable

from mnist_vae.errors import UserError
from mnist_vae.params import Params, load_params


def run_stage(name: str, main: Callable[[Params], None], params_path: str = "params.yaml") -> None:
    logging.basicConfig(level=logging.INFO, format=f"{name}: %(message)s", stream=sys.stderr)
    signal.signal(signal.SIGTERM, _interrupt)  # DVC and queue workers stop stages with SIGTERM: end as on Ctrl-C
    try:
        main(load_params(params_path))
    except UserError as exc:
        print(f"{name}: error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print(f"{name}: interrupted; no output was written", file=sys.stderr)
        sys.exit(130)


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")

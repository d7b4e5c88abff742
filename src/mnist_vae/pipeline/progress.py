"""A training's progress as it happens, for a program watching it (the search's pruner): each finished epoch's
history row, appended as one JSON line to the file that MNIST_VAE_PROGRESS names, when it names one.

The train stage writes (:func:`reporter`), the watcher reads (:func:`read`); both are here, so the format has
one home. The rows are the training loop's (vae/training.py's epoch_row): `epoch` and `test_total` (the
test -ELBO in nats) among them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable, Optional

ENV = "MNIST_VAE_PROGRESS"


def reporter(env: Optional[dict] = None) -> Callable[[dict], None]:
    """The train stage's on_epoch: appends each row to the file ENV names (an empty one at the start), or
    does nothing when ENV is unset."""
    name = (os.environ if env is None else env).get(ENV)
    if not name:
        return lambda row: None
    path = Path(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("")

    def report(row: dict) -> None:
        with open(path, "a") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()

    return report


def read(path: Path) -> list[dict]:
    """The rows written so far (a line still being written is left for the next read)."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return []
    rows = []
    for line in text.split("\n")[:-1]:  # only complete lines: each ends in a newline
        rows.append(json.loads(line))
    return rows


def epoch_losses(path: Path) -> list[tuple[int, float]]:
    """(epoch, test -ELBO) of every epoch reported so far, in order: what the pruner compares."""
    return [(int(row["epoch"]), float(row["test_total"])) for row in read(path)]

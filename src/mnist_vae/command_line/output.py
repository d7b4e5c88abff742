"""The command's outputs: its notes on stderr, and images, arrays and JSON written atomically."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from mnist_vae.errors import UserError
from mnist_vae.files import atomic_path

PROG = "mnist-vae"


def note(message: str) -> None:
    print(f"{PROG}: {message}", file=sys.stderr)


def check_output(path: str, allowed: tuple[str, ...]) -> Path:
    out = Path(path)
    if out.suffix.lower() not in allowed:
        raise UserError(f"-o {path}: write {' or '.join(allowed)}")
    return out


def grid(images: torch.Tensor, columns: Optional[int] = None) -> np.ndarray:
    """(N, 784) -> (rows, columns, 784), the last row padded with NaN (blank)."""
    n = len(images)
    columns = columns or math.ceil(math.sqrt(n))
    rows = math.ceil(n / columns)
    out = np.full((rows * columns, images.shape[-1]), np.nan, np.float32)
    out[:n] = images.numpy()
    return out.reshape(rows, columns, -1)


def write_npy(path: Path, array) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, np.asarray(array, dtype=np.float32), allow_pickle=False)


def write_images(out: Path, images: torch.Tensor, what: str, columns: Optional[int] = None) -> None:
    """(N, 784) images -> .npy, or a .png grid of `columns` columns (default: about square)."""
    from mnist_vae.report.canvas import save_grid

    if out.suffix.lower() == ".npy":
        write_npy(out, images)
    else:
        save_grid(out, grid(images, columns))
    note(f"wrote {out} ({what})")



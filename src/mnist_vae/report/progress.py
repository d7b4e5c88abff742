"""The training's frames (vae/frames.py, in reports/frames.npz) as pictures: for every `every`-th epoch and the
last, an 8 x 8 grid of the digits decoded from the fixed draws, and the fixed test digits above their
reconstructions, as PNG files named for what they show and when (the track stage logs each as one step of
an MLflow image key)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

import numpy as np

from mnist_vae.report.canvas import save_grid

KINDS = ("samples", "reconstructions")
NAME = re.compile(r"^(samples|reconstructions)_epoch_(\d+)\.png$")


def selected(epochs: np.ndarray, every: int) -> list[int]:
    """The frames to draw: those taken after a multiple of `every` epochs (0: before the first), and the last;
    none when `every` is 0."""
    if every == 0 or len(epochs) == 0:
        return []
    return [i for i, epoch in enumerate(epochs) if epoch % every == 0 or i == len(epochs) - 1]


def file_name(kind: str, epoch: int) -> str:
    return f"{kind}_epoch_{epoch:03d}.png"


def parse(name: str) -> Optional[tuple[str, int]]:
    """(kind, epoch) of a file this module names, else None."""
    found = NAME.match(name)
    return (found.group(1), int(found.group(2))) if found else None


def write(folder: Path, frames: dict[str, np.ndarray], every: int) -> list[Path]:
    """The selected frames as PNG files in `folder`; the paths written."""
    written = []
    side = int(round(frames["samples"].shape[1] ** 0.5))
    for i in selected(frames["epochs"], every):
        epoch = int(frames["epochs"][i])
        samples = frames["samples"][i].reshape(side, side, -1) / 255.0
        pairs = np.stack([frames["originals"], frames["reconstructions"][i]]) / 255.0
        for kind, images in (("samples", samples), ("reconstructions", pairs)):
            path = Path(folder) / file_name(kind, epoch)
            save_grid(path, images)
            written.append(path)
    return written

"""The canvas every figure is drawn on: Agg figures made without pyplot, digit grids tiled into one array and
drawn with one imshow, and PNG files written atomically (grayscale when a figure has no colour)."""

from __future__ import annotations

import io
import os
from pathlib import Path

import matplotlib
import numpy as np
import PIL.Image
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from mnist_vae.data.geometry import SIDE
from mnist_vae.files import atomic_path

PAD = 2  # pixels of white between tiled images
DPI = 100
GRAY = matplotlib.colormaps["gray"].with_extremes(bad="white")  # NaN cells show as blank paper


def figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def grid_figure(canvas: np.ndarray, extra_w: float, extra_h: float, min_w: float,
                 max_w: float = 16.0, max_h: float = 10.0):
    """A figure and axes sized for `canvas` (about 2 screen pixels per image pixel, smaller for big grids),
    plus `extra_w` x `extra_h` inches for labels and title, at least `min_w` inches wide (for the title);
    the canvas is drawn on the axes."""
    h, w = canvas.shape
    inch = min(2.0 / DPI, (max_w - extra_w) / w, (max_h - extra_h) / h)
    fig = figure(max(w * inch + extra_w, min_w), h * inch + extra_h)
    ax = fig.add_subplot()
    show(ax, canvas)
    return fig, ax


def tile(images, pad: int = PAD, fill: float = 1.0) -> np.ndarray:
    """(rows, cols, 784 or 28, 28) images -> one (rows*28 + (rows-1)*pad, cols*28 + (cols-1)*pad) array.

    The pad between images is `fill` (white on the gray colormap); NaN images stay NaN (drawn blank).
    """
    images = np.asarray(images, dtype=np.float32)
    rows, cols = images.shape[:2]
    images = images.reshape(rows, cols, SIDE, SIDE)
    step = SIDE + pad
    out = np.full((rows * step - pad, cols * step - pad), fill, dtype=np.float32)
    for i in range(rows):
        for j in range(cols):
            out[i * step:i * step + SIDE, j * step:j * step + SIDE] = images[i, j]
    return out


def show(ax, canvas: np.ndarray, bare: bool = True, **kwargs):
    """Draw a tiled canvas of images in [0, 1] on `ax`; `bare`: without frame or ticks."""
    im = ax.imshow(canvas, cmap=GRAY, vmin=0.0, vmax=1.0, interpolation="antialiased", **kwargs)
    if not bare:
        return im
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
    return im


def centres(count: int, offset: float = 0.0, pad: int = PAD) -> list[float]:
    """Pixel coordinates of the centres of `count` tiled images starting at `offset`."""
    return [offset + k * (SIDE + pad) + (SIDE - 1) / 2 for k in range(count)]


def labelled_grid(canvas: np.ndarray, labels: list[str], title: str = "") -> Figure:
    """A tiled canvas (:func:`tile`) with one label per row of digits on the left."""
    rows = (canvas.shape[0] + PAD) // (SIDE + PAD)
    if len(labels) != rows:
        raise ValueError(f"{len(labels)} labels for {rows} rows")
    fig, ax = grid_figure(canvas, 1.9, 0.6 if title else 0.3, min_w=3.6)
    ax.set_yticks(centres(rows), labels, fontsize=8)
    ax.tick_params(axis="y", length=0)
    if title:
        ax.set_title(title, fontsize=9)
    return fig


def save(fig: Figure, path: str | os.PathLike) -> None:
    """Write `fig` as a PNG at DPI dots per inch (grayscale when it has no colour), making parent folders.

    A figure made through pyplot is closed. The figures made here are not registered with pyplot, so
    they need no closing: one is freed when the caller drops it (and can still be logged after saving).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    image = PIL.Image.open(buffer).convert("RGB")  # the figures have an opaque background
    rgb = np.asarray(image)
    if (rgb == rgb[..., :1]).all():  # digit grids: a grayscale PNG is about half the size
        image = image.convert("L")
    image.save(path, format="png")
    if fig.canvas.manager is not None:  # a pyplot figure (so pyplot is already imported)
        import matplotlib.pyplot as plt

        plt.close(fig)


def save_grid(path: str | Path, images, labels: list[str] | None = None, title: str = "") -> None:
    """(rows, cols, 784 or 28, 28) images in [0, 1] (NaN: an empty cell) -> a PNG grid, white lines between
    digits, written atomically.

    With `labels`, one per row, a figure with the labels on the left (matplotlib); else plain pixels,
    scaled up 3x so a digit is 84 pixels on screen."""
    images = np.asarray(images, dtype=np.float32)
    canvas = np.nan_to_num(tile(images), nan=1.0)  # missing cells: blank paper
    with atomic_path(path) as tmp:
        if labels is None:
            pixels = np.rint(np.clip(canvas, 0, 1) * 255).astype(np.uint8)
            image = PIL.Image.fromarray(pixels, mode="L")
            image.resize((image.width * 3, image.height * 3), PIL.Image.Resampling.NEAREST).save(tmp, format="png")
        else:
            save(labelled_grid(canvas, labels, title), tmp)

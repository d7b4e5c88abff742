"""Image files in: any PNG/JPEG -> a 28x28 MNIST-style digit (white on black).

MNIST digits are white ink on a black background, size-normalised to fit a 20x20 box (aspect kept)
and centred by their centre of mass in a 28x28 frame. :func:`read_digit` does the same to a picture
of a handwritten digit of any size and colour:

1. flatten transparency onto white paper and convert to grey (ITU-R 601 luma, Pillow's "L");
2. if the border is mostly bright (dark ink on light paper), invert it, and say so; then take the
   border's median level off every pixel, so the background is black as in MNIST;
3. a picture that is already 28x28 is kept as it is (it is taken to be MNIST-like); any other size
   is cropped to its ink (pixels above 1/4 of the brightest), scaled so its longer side is 20
   pixels, and pasted into 28x28 with its centre of mass at pixel (14, 14), where MNIST's lie.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import PIL.Image

from mnist_vae.data.geometry import SIDE
from mnist_vae.errors import UserError

BOX = 20  # MNIST's size-normalisation box
CENTRE = 14.0  # where MNIST's centres of mass lie (row and column 14.0 on average over its digits)
INK = 0.25  # a pixel is ink when brighter than this fraction of the brightest pixel


def read_digit(path: str | Path) -> tuple[np.ndarray, str]:
    """An image file -> (uint8 (28, 28) white-on-black digit, a one-line account of what was done)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} does not exist; give a test-digit index or a PNG/JPEG file")
    try:
        with PIL.Image.open(path) as im:
            im.load()
            image = im.copy()
    except (PIL.UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise UserError(f"{path} is not an image Pillow can read ({exc.__class__.__name__}); give a PNG or JPEG file") from None
    steps = [f"{image.width}x{image.height} {image.mode}"]
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        paper = PIL.Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = PIL.Image.alpha_composite(paper, rgba)
        steps.append("transparency on white")
    grey = np.asarray(image.convert("L"), dtype=np.float64)
    if image.mode != "L":
        steps.append("grey")
    border = np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])
    if np.median(border) > 127:
        grey = 255.0 - grey
        border = 255.0 - border
        steps.append("inverted (light background: read as dark ink on light paper)")
    background = float(np.median(border))
    if background > 0:  # paper is never quite white (nor a photo's background black): make it 0, as MNIST's
        grey = np.clip(grey - background, 0, None)
        steps.append(f"background level {background:.0f} taken off")
    if grey.shape == (SIDE, SIDE):
        steps.append("28x28 kept as is")
        return np.rint(grey).astype(np.uint8), ", ".join(steps)
    digit, how = _normalise(grey)
    return digit, ", ".join(steps + [how])


def _normalise(grey: np.ndarray) -> tuple[np.ndarray, str]:
    """MNIST's size normalisation: the ink's bounding box into 20x20 (aspect kept), centred by mass in 28x28."""
    peak = grey.max()
    if peak <= 0:
        return np.zeros((SIDE, SIDE), np.uint8), "blank (no ink): an all-black 28x28 digit"
    rows, cols = np.nonzero(grey > INK * peak)
    crop = grey[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    h, w = crop.shape
    scale = BOX / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    small = np.asarray(PIL.Image.fromarray(crop.astype(np.float32), mode="F").resize(size, PIL.Image.Resampling.LANCZOS))
    small = np.clip(small, 0, 255)
    small = small * (255.0 / max(small.max(), 1e-9))  # full contrast, as MNIST's strokes
    frame = np.zeros((SIDE, SIDE), np.float64)
    total = small.sum()
    ys, xs = np.indices(small.shape)
    cy, cx = (ys * small).sum() / total, (xs * small).sum() / total
    top = int(np.clip(round(CENTRE - cy), 0, SIDE - small.shape[0]))
    left = int(np.clip(round(CENTRE - cx), 0, SIDE - small.shape[1]))
    frame[top:top + small.shape[0], left:left + small.shape[1]] = small
    return np.rint(frame).astype(np.uint8), f"ink {w}x{h} scaled to {size[0]}x{size[1]}, centred by mass in 28x28"

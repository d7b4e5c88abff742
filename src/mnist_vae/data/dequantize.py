"""The dequantization modes (``dequantize.mode``), both ways: uint8 pixels to the model's input, and the
model's images back to the pixel scale. Each mode is spelled out here and nowhere else.

=========  ==================================  ===============================  ===========================
mode       training input x (:func:`dequantize`)  its mean over the noise U          x back to pixel / 255
                                               (:func:`expected_input`)           (:func:`to_pixel_scale`)
=========  ==================================  ===============================  ===========================
notebook   clip((pixel + U) / 255, 0, 1)       min((pixel + 0.5) / 255, 1)      (x - a) / (1 - a), a = 0.5/255
uniform    (pixel + U) / 256                   (pixel + 0.5) / 256              (256 x - 0.5) / 255
none       pixel / 255                         pixel / 255                      x
binarize   Bernoulli(pixel / 255)              pixel / 255 (the Bernoulli mean)  x
=========  ==================================  ===============================  ===========================

(For notebook mode, pixel 255 is always clipped to 1, and (pixel + U) / 255 < 1 for every smaller pixel,
hence the min.) U is uniform on [0, 1).
"""

from __future__ import annotations

import numpy as np
import torch

from mnist_vae.errors import UserError
from mnist_vae.params import DEQUANTIZE_MODES as MODES

__all__ = ["MODES", "check_mode", "dequantize", "dequantize_splits", "expected_input", "to_pixel_scale"]


def check_mode(mode: str) -> str:
    """`mode` if it is a dequantize mode, else a one-line UserError naming the modes."""
    if mode not in MODES:
        raise UserError(f"unknown dequantize mode {mode!r}; use one of {', '.join(MODES)}")
    return mode


def dequantize(pixels: np.ndarray, mode: str, generator: torch.Generator) -> np.ndarray:
    """uint8 images (N, 28, 28) -> float32 (N, 784) in [0, 1], the training input of `mode`.

    notebook: clip((pixel + U[0,1)) / 255, 0, 1), computed exactly as the reference notebook does
    uniform:  (pixel + U[0,1)) / 256, the standard dequantization for density models
    none:     pixel / 255
    binarize: Bernoulli(pixel / 255) draws, the binarized-MNIST protocol
    """
    shape = pixels.shape
    if mode == "notebook":
        x = (np.float32(pixels) + torch.rand(shape, generator=generator).numpy()) / 255.0
        x = x.clip(0, 1)
    elif mode == "uniform":
        x = (np.float32(pixels) + torch.rand(shape, generator=generator).numpy()) / np.float32(256.0)
        # 255 + u rounds to 256 in float32 for u >= 1 - 2**-17: keep the promise x < 1
        x = np.minimum(x, np.nextafter(np.float32(1), np.float32(0)))
    elif mode == "none":
        x = np.float32(pixels) / np.float32(255.0)
    elif mode == "binarize":
        x = torch.bernoulli(torch.from_numpy(np.float32(pixels) / np.float32(255.0)), generator=generator).numpy()
    else:
        check_mode(mode)
    return np.ascontiguousarray(x.reshape(len(pixels), -1), dtype=np.float32)


def dequantize_splits(raw: dict[str, np.ndarray], mode: str, seed: int) -> dict[str, dict[str, np.ndarray]]:
    """Train uses the global seed (as the notebook's torch.manual_seed(seed)); test its own generator (seed + 1)."""
    out = {}
    for split, offset in (("train", 0), ("test", 1)):
        gen = torch.Generator().manual_seed(seed + offset)
        pixels = raw[f"x_{split}"]
        arrays = {"x": dequantize(pixels, mode, gen), "y": raw[f"y_{split}"]}
        if mode == "binarize":  # intensities, for dynamic binarization during training
            arrays["p"] = dequantize(pixels, "none", gen)
        out[split] = arrays
    return out


def expected_input(pixels: np.ndarray, mode: str) -> np.ndarray:
    """Pixels on the 0..255 scale (float64, any shape) -> the mean of `mode`'s training input over its
    noise (float64, same shape): deterministic, what a trained model is given for a real image."""
    check_mode(mode)
    if mode == "notebook":
        return np.minimum((pixels + 0.5) / 255.0, 1.0)
    if mode == "uniform":
        return (pixels + 0.5) / 256.0
    return pixels / 255.0


def to_pixel_scale(x: torch.Tensor, mode: str) -> torch.Tensor:
    """A model's images (means on the scale of its training data) -> the pixel / 255 scale, in [0, 1].

    The affine map that sends the dequantized data's mean for pixel 0 to 0 and for pixel 255 to 1,
    clipped to [0, 1]:
      notebook: x = clip((pixel + u) / 255, 0, 1) has mean 0.5/255 at pixel 0 and exactly 1 at pixel 255
                (clipped), so (x - a) / (1 - a) with a = 0.5/255;
      uniform:  x = (pixel + u) / 256 has mean (pixel + 0.5) / 256, so (256 x - 0.5) / 255, exact;
      none, binarize: the mean is already pixel / 255.
    In between, the notebook map is off by at most half a grey level (0.002). The shift matters little,
    but it puts a perfect VAE's background and full ink where the classifier saw them.
    """
    check_mode(mode)
    if mode == "notebook":
        a = 0.5 / 255
        return ((x - a) / (1 - a)).clamp(0, 1)
    if mode == "uniform":
        return ((256 * x - 0.5) / 255).clamp(0, 1)
    return x

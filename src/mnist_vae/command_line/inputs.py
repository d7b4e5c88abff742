"""The command's inputs: test digits by index, image files, latent vectors, unit=value pairs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from mnist_vae.api import tasks
from mnist_vae.command_line.output import note
from mnist_vae.errors import FileProblem, UserError

PROCESSED_TEST, RAW = Path("data/processed/test.npz"), Path("data/raw/mnist.npz")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


class TestDigits:
    """The test set, read once on first use: model inputs (N, 784) and labels."""

    def __init__(self, path: Optional[str], model):
        self.path, self.model = path, model
        self._x: Optional[torch.Tensor] = None
        self.labels: Optional[np.ndarray] = None

    def _load(self) -> torch.Tensor:
        if self._x is not None:
            return self._x
        candidates = [Path(self.path)] if self.path else [RAW, PROCESSED_TEST]
        path = next((c for c in candidates if c.is_file()), None)
        if path is None:
            raise FileProblem(candidates[0], "missing", f"no test digits: {' or '.join(map(str, candidates))} is missing; "
                              "pass --data mnist.npz|test.npz")
        try:
            with np.load(path, allow_pickle=False) as f:
                if "x_test" in f.files:  # raw MNIST (Keras layout): uint8 pixels
                    x, self.labels = tasks.preprocess(f["x_test"], self.model.dequantize), f["y_test"] if "y_test" in f.files else None
                elif "x" in f.files:  # data/processed: already the model's input
                    x, self.labels = torch.from_numpy(np.asarray(f["x"], np.float32)), f["y"] if "y" in f.files else None
                else:
                    raise UserError(f"{path} holds neither 'x' (data/processed) nor 'x_test' (mnist.npz); pass --data test.npz|mnist.npz")
        except (OSError, ValueError) as exc:
            raise UserError(f"{path} is not a readable .npz ({exc.__class__.__name__}); pass --data test.npz|mnist.npz") from None
        self._x = x.reshape(len(x), -1)
        return self._x

    def __len__(self) -> int:
        return len(self._load())

    def get(self, index: int) -> torch.Tensor:
        x = self._load()
        if not 0 <= index < len(x):
            raise UserError(f"test digit {index} is out of range: the test set has {len(x)} digits (0..{len(x) - 1})")
        return x[index]

    def first(self, n: int) -> torch.Tensor:
        return self._load()[:n]


def is_index(text: str) -> bool:
    return text.lstrip("-").isdigit()


def read_inputs(names: Sequence[str], model, digits: TestDigits) -> torch.Tensor:
    """Test-digit indices and image files -> the model's inputs (N, 784), saying what was done to each file."""
    rows = []
    for name in names:
        if is_index(name):
            rows.append(digits.get(int(name)))
        else:
            from mnist_vae.api.images import read_digit

            pixels, how = read_digit(name)
            note(f"{name}: {how}")
            rows.append(tasks.preprocess(pixels, model.dequantize)[0])
    return torch.stack(rows)


def parse_latents(text: str, latent_dim: int) -> torch.Tensor:
    """A JSON list (one vector or a list of vectors), or a .json / .npy file of them (an `encode` output
    too: its mu is used) -> (N, latent_dim)."""
    path = Path(text)
    if path.suffix in (".npy", ".json") and not text.lstrip().startswith("["):
        if not path.is_file():
            raise UserError(f"{path} does not exist; give latent vectors as a JSON list, a .json or a .npy file")
        try:
            if path.suffix == ".npy":
                value = np.load(path, allow_pickle=False)
                if value.ndim == 3 and value.shape[1] == 2:  # an `encode` output: (N, 2, d) = (mu, logvar)
                    value = value[:, 0]
            else:
                value = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise UserError(f"{path} is not a readable {path.suffix} file ({exc.__class__.__name__})") from None
    else:
        try:
            value = json.loads(text)
        except ValueError:
            raise UserError(f"{text!r} is not a JSON list of numbers nor a .json/.npy file of latent vectors") from None
    if isinstance(value, dict) and "mu" in value:
        value = value["mu"]
    return tasks.as_latents(value, latent_dim)


def parse_dims(items: Sequence[str], latent_dim: int) -> dict[int, float]:
    dims = {}
    for item in items:
        key, sep, value = item.partition("=")
        try:
            j, v = int(key), float(value)
        except ValueError:
            raise UserError(f"--dims takes UNIT=VALUE pairs such as 3=1.5, got {item!r}") from None
        if not sep or not 0 <= j < latent_dim:
            raise UserError(f"--dims {item!r}: the unit must be in 0..{latent_dim - 1} (this model's latent_dim is {latent_dim})")
        dims[j] = v
    return dims


def endpoint(text: str, model, digits: TestDigits) -> torch.Tensor:
    """An interpolation end: a test index or an image file (its encoder mean), or a latent vector."""
    if is_index(text) or Path(text).suffix.lower() in IMAGE_SUFFIXES:
        return tasks.encode(model, read_inputs([text], model, digits))[0][0]
    z = parse_latents(text, model.latent_dim)
    if len(z) != 1:
        raise UserError(f"{text}: an interpolation end is one latent vector, got {len(z)}")
    return z[0]



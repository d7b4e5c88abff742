"""An MNIST digit classifier whose penultimate layer is the feature space of the quality metrics.

A small CNN (two 3x3 convolutions with batch norm, ReLU and 2x2 max-pooling, a fully connected feature
layer, a linear head), trained with Adam under a one-cycle learning-rate schedule on the raw MNIST
training images scaled as pixel / 255. It never sees the VAE's dequantized data, so it depends on the
download only and a VAE-only change never retrains it.

Input convention: (N, 784) or (N, 28, 28) float images in [0, 1] on the pixel / 255 scale. A VAE's
decoder means E[x|z] are already on that scale (its training data were (pixel + u) / 255, at most one
grey level above pixel / 255), so they go in unchanged; see `as_images`.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from mnist_vae.data.geometry import SIDE
from mnist_vae.errors import UserError
from mnist_vae.files import load_tensors, save_tensors
from mnist_vae.params import ClassifierParams

N_CLASSES = 10


class DigitClassifier(nn.Module):
    def __init__(self, config: ClassifierParams):
        super().__init__()
        self.config = config
        c1, c2 = config.channels
        self.body = nn.Sequential(
            nn.Conv2d(1, c1, 3, padding=1, bias=False), nn.BatchNorm2d(c1), nn.ReLU(), nn.MaxPool2d(2),  # 14x14
            nn.Conv2d(c1, c2, 3, padding=1, bias=False), nn.BatchNorm2d(c2), nn.ReLU(), nn.MaxPool2d(2),  # 7x7
            nn.Flatten(),
            nn.Linear(c2 * 7 * 7, config.feature_dim), nn.ReLU(),
        )
        self.head = nn.Linear(config.feature_dim, N_CLASSES)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] -> the penultimate layer's activations, (N, feature_dim)."""
        return self.body(as_images(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] -> class logits, (N, 10)."""
        return self.head(self.features(x))


def as_images(x: torch.Tensor) -> torch.Tensor:
    """(N, 784) or (N, 28, 28) images on the pixel / 255 scale -> the network's (N, 1, 28, 28) float input."""
    return x.reshape(-1, 1, SIDE, SIDE).float()


def scale_pixels(pixels: np.ndarray) -> torch.Tensor:
    """uint8 MNIST pixels (0..255) -> float32 images in [0, 1], the classifier's input scale."""
    return torch.from_numpy(np.asarray(pixels, dtype=np.float32) / 255.0)


@contextlib.contextmanager
def threads(n: int):
    """Run the block with n intra-op threads (0: leave torch's setting), restoring the setting after."""
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def train(x: torch.Tensor, y: torch.Tensor, p: ClassifierParams) -> DigitClassifier:
    """Train on images x in [0, 1] and integer labels y; same params and data give the same weights."""
    if len(x) != len(y) or len(x) == 0:
        raise UserError(f"classifier: {len(x)} images and {len(y)} labels; need as many of each, at least one")
    with threads(p.threads):
        return _train(x, y, p)


def _train(x: torch.Tensor, y: torch.Tensor, p: ClassifierParams) -> DigitClassifier:
    torch.manual_seed(p.seed)
    model = DigitClassifier(p)
    gen = torch.Generator().manual_seed(p.seed)
    y = torch.as_tensor(y).long()
    steps_per_epoch = -(-len(x) // p.batch_size)
    opt = torch.optim.Adam(model.parameters(), lr=p.lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=p.lr, epochs=p.epochs, steps_per_epoch=steps_per_epoch)
    model.train()
    for _ in range(p.epochs):
        order = torch.randperm(len(x), generator=gen)
        for idx in order.split(p.batch_size):
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return model.eval()


@torch.no_grad()
def predict(model: DigitClassifier, x: torch.Tensor, batch_size: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
    """(features, class probabilities) of images in [0, 1], in batches; float64 features."""
    model.eval()
    feats, probs = [], []
    for xb in x.split(batch_size):
        f = model.features(xb)
        feats.append(f.double())
        probs.append(F.softmax(model.head(f), dim=1).double())
    return torch.cat(feats), torch.cat(probs)


def accuracy(model: DigitClassifier, x: torch.Tensor, y) -> float:
    _, probs = predict(model, x)
    return float((probs.argmax(1) == torch.as_tensor(y).long()).double().mean())


def fit(x_train: torch.Tensor, y_train, x_test: torch.Tensor, y_test, p: ClassifierParams):
    """Train and score: (model, metrics for metrics/classifier.json)."""
    start = time.perf_counter()
    model = train(x_train, y_train, p)
    train_time = time.perf_counter() - start
    with threads(p.threads):
        return model, {
            "test_accuracy": accuracy(model, x_test, y_test),
            "train_accuracy": accuracy(model, x_train, y_train),
            "train_time": train_time,
            "n_train": len(x_train), "n_test": len(x_test), "epochs": p.epochs,
            "threads": torch.get_num_threads(),
        }


def save(path: Path, model: DigitClassifier) -> None:
    """State dict plus config; loadable with torch.load(weights_only=True)."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    save_tensors(path, {"config": model.config.model_dump(), "state_dict": state})


def load(path: Path) -> DigitClassifier:
    """The classifier saved at `path`, in eval mode; a FileProblem if it is missing or unreadable."""
    built: list[DigitClassifier] = []

    def build(ckpt: dict) -> None:
        model = DigitClassifier(ClassifierParams.model_validate(ckpt["config"]))
        model.load_state_dict(ckpt["state_dict"])
        built.append(model)

    load_tensors(path, "classifier", check=build)
    return built[0].eval()

"""The training loop: Adam on the (beta-weighted) negative ELBO or the IWAE bound, minibatches of a
tensor kept whole in memory (on the GPU when there is one), no per-step host syncs."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Optional

import torch
from tqdm import tqdm

from mnist_vae import objectives
from mnist_vae.errors import UserError
from mnist_vae.params import TrainParams


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("train.device is 'cuda' but no CUDA device is available; use 'auto' or 'cpu'")
    return torch.device(name)


def kl_weight(step: int, steps_per_epoch: int, p: TrainParams) -> float:
    """beta, ramped linearly from 0 per step over the first kl_warmup_epochs epochs."""
    if p.kl_warmup_epochs == 0:
        return p.beta
    return p.beta * min(1.0, step / (p.kl_warmup_epochs * steps_per_epoch))


def autocast(device: torch.device, precision: str):
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def loss_terms(model, x: torch.Tensor, p: TrainParams) -> tuple[torch.Tensor, torch.Tensor]:
    """(reconstruction, KL) per example for the training objective; for IWAE the reconstruction slot
    holds -(IWAE bound) - KL, so that rec + KL is the bound being maximised."""
    if p.objective == "elbo":
        return objectives.negative_elbo(model, x)
    log_w, _, kl = objectives.log_importance_weights(model, x, p.iw_samples)
    return -objectives.iwae_bound(log_w) - kl, kl


@torch.no_grad()
def evaluate_elbo(model, x: torch.Tensor, batch_size: int = 1000) -> dict[str, float]:
    """Mean per-example negative ELBO, reconstruction and KL (one sample of z per example)."""
    model.eval()
    sums = torch.zeros(2, device=x.device, dtype=torch.float64)
    for xb in x.split(batch_size):
        rec, kl = objectives.negative_elbo(model, xb)
        sums += torch.stack([rec.sum(), kl.sum()]).double()
    rec, kl = (sums / len(x)).tolist()
    return {"total": rec + kl, "rec": rec, "kl": kl}


@dataclass
class Data:
    """Training inputs kept as whole tensors on the training device."""

    x_train: torch.Tensor
    x_test: torch.Tensor
    # pixel intensities for dynamic binarization (redrawn every epoch); None otherwise
    p_train: Optional[torch.Tensor] = None


def train_epoch(model, optimizer, x: torch.Tensor, order: torch.Tensor, p: TrainParams, step: int,
                steps_per_epoch: int, desc: str = "") -> tuple[torch.Tensor, int]:
    """One pass over x in the given order. Returns the sums over examples of (-ELBO, rec, KL), kept on
    the device (no per-step host sync), and the global step count."""
    model.train()
    sums = torch.zeros(3, device=x.device)
    seen = 0
    bar = tqdm(order.split(p.batch_size), desc=desc, leave=False, disable=None)
    for i, idx in enumerate(bar):
        xb = x[idx]
        weight = kl_weight(step, steps_per_epoch, p)
        with autocast(x.device, p.precision):
            rec, kl = loss_terms(model, xb, p)
            rec, kl = rec.sum(), kl.sum()
            loss = rec + weight * kl
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            sums += torch.stack([rec + kl, rec, kl])
        seen += len(idx)
        step += 1
        if i % 50 == 0 and not bar.disable:  # the only host sync in the loop, for the progress bar
            total, rec_m, kl_m = (sums / seen).tolist()
            bar.set_postfix(total=f"{total:.1f}", rec=f"{rec_m:.1f}", kl=f"{kl_m:.2f}")
    return sums, step


def make_optimizer(model, p: TrainParams) -> torch.optim.Optimizer:
    return torch.optim.Adam(model.parameters(), lr=p.lr, fused=True)


def train(model, data: Data, p: TrainParams, seed: int, device: torch.device) -> list[dict]:
    """Train in place and return the per-epoch history rows (mean per-example figures, nats)."""
    torch.manual_seed(seed)
    shuffle = torch.Generator(device="cpu").manual_seed(seed)
    optimizer = make_optimizer(model, p)
    n = len(data.x_train)
    steps_per_epoch = -(-n // p.batch_size)
    history, step = [], 0
    for epoch in range(1, p.epochs + 1):
        start = time.perf_counter()
        x_epoch = torch.bernoulli(data.p_train) if p.dynamic_binarization else data.x_train
        order = torch.randperm(n, generator=shuffle).to(device)
        sums, step = train_epoch(model, optimizer, x_epoch, order, p, step, steps_per_epoch,
                                 desc=f"epoch {epoch}/{p.epochs}")
        train_total, train_rec, train_kl = (sums / n).tolist()
        test = evaluate_elbo(model, data.x_test)
        row = {
            "epoch": epoch,
            "train_total": train_total, "train_rec": train_rec, "train_kl": train_kl,
            "test_total": test["total"], "test_rec": test["rec"], "test_kl": test["kl"],
            "kl_weight": kl_weight(step, steps_per_epoch, p),
            "epoch_time": time.perf_counter() - start,
            "time": time.time(),  # the epoch's wall-clock end (Unix seconds): the metric timestamps in MLflow
        }
        history.append(row)
        tqdm.write(
            f"epoch {epoch:3d}  train -ELBO {train_total:8.2f} (rec {train_rec:7.2f}, KL {train_kl:6.2f})  "
            f"test -ELBO {test['total']:8.2f}  beta {row['kl_weight']:.3f}  {row['epoch_time']:.1f}s"
        )
    return history

"""The training loop: Adam on the (beta-weighted) negative ELBO or the IWAE bound, minibatches of a
tensor kept whole in memory (on the GPU when there is one), no per-step host syncs. Its state, saved so
that an interrupted training resumes to the very bytes an uninterrupted one gives, is state.py's."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Callable, Optional

import torch
from tqdm import tqdm

from mnist_vae.errors import UserError
from mnist_vae.params import TrainParams
from mnist_vae.vae import evaluation, objectives
from mnist_vae.vae.device import autocast
from mnist_vae.vae.frames import Frames
from mnist_vae.vae.state import capture, restore


def kl_weight(step: int, steps_per_epoch: int, p: TrainParams) -> float:
    """beta, ramped linearly from 0 per step over the first kl_warmup_epochs epochs."""
    if p.kl_warmup_epochs == 0:
        return p.beta
    return p.beta * min(1.0, step / (p.kl_warmup_epochs * steps_per_epoch))


def learning_rate(epoch: int, p: TrainParams) -> float:
    """train.lr, or under lr_schedule burda the schedule of Burda et al. (2015): stage i = 0, 1, 2, ...
    lasts 3^i epochs at train.lr * 10^(-i/7), so stage i ends at epoch (3^(i+1) - 1) / 2 (1, 4, 13, 40,
    121, 364, 1093, 3280)."""
    if p.lr_schedule == "constant":
        return p.lr
    i = 0
    while epoch > (3 ** (i + 1) - 1) // 2:
        i += 1
    return p.lr * 10 ** (-i / 7)


def loss_terms(model, x: torch.Tensor, p: TrainParams) -> tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
    """Per example: the reconstruction term -log p(x|z), the KL and, for objective iwae, the negative
    K-sample IWAE bound (the loss then; None under elbo). Under iwae the reconstruction term is the mean
    over the K samples, so rec + KL is a (K-sample average) estimate of the negative ELBO there too."""
    if p.objective == "elbo":
        rec, kl = objectives.negative_elbo(model, x)
        return rec, kl, None
    log_w, log_px, kl = objectives.log_importance_weights(model, x, p.iw_samples)
    return -log_px, kl, -objectives.iwae_bound(log_w)


def evaluation_seed(seed: int) -> int:
    """The seed of the per-epoch test evaluation's own generator: a stream apart from training's."""
    return stream_seed(seed, "test evaluation")


def stream_seed(seed: int, name: str) -> int:
    """The seed of a generator of its own for the use `name`: a stream apart from the training's (and each
    other's), derived from the pipeline's seed."""
    return int.from_bytes(hashlib.sha256(f"mnist-vae {name} {seed}".encode()).digest()[:8], "little")


@dataclass
class Data:
    """Training inputs kept as whole tensors on the training device."""

    x_train: torch.Tensor
    x_test: torch.Tensor
    # pixel intensities for dynamic binarization (redrawn every epoch); None otherwise
    p_train: Optional[torch.Tensor] = None


# How often (in steps, and at the end of each epoch) the loss's finiteness is read back to the host, per
# device type: every step on the CPU, where reading a number costs nothing; every 50 steps elsewhere
# (CUDA), so the loop keeps no per-step sync. The first bad step is recorded on the device meanwhile,
# so the error names it either way.
CHECK_EVERY = {"cpu": 1}
CHECK_EVERY_DEFAULT = 50


def train_epoch(model, optimizer, x: torch.Tensor, order: torch.Tensor, p: TrainParams, step: int,
                steps_per_epoch: int, desc: str = "", epoch: int = 1) -> tuple[torch.Tensor, int]:
    """One pass over x in the given order. Returns the sums over examples of (-ELBO, rec, KL) and, under
    objective iwae, of the negative IWAE bound, kept on the device (no per-step host sync), and the
    global step count. A loss that is NaN or infinite raises UserError naming the epoch and step: on the
    CPU before that step's update, elsewhere within CHECK_EVERY_DEFAULT steps."""
    model.train()
    sums = torch.zeros(3 if p.objective == "elbo" else 4, device=x.device)
    check_every = CHECK_EVERY.get(x.device.type, CHECK_EVERY_DEFAULT)
    bad_step = torch.full((), -1, dtype=torch.long, device=x.device)  # the first step with a non-finite loss
    bad_loss = torch.zeros((), device=x.device)
    seen = 0
    bar = tqdm(order.split(p.batch_size), desc=desc, leave=False, disable=None)
    for i, idx in enumerate(bar):
        xb = x[idx]
        weight = kl_weight(step, steps_per_epoch, p)
        with autocast(x.device, p.precision):
            rec, kl, neg_bound = loss_terms(model, xb, p)
            rec, kl = rec.sum(), kl.sum()
            if neg_bound is None:
                loss = rec + weight * kl
            else:
                neg_bound = neg_bound.sum()
                loss = neg_bound
        newly_bad = (bad_step < 0) & ~torch.isfinite(loss.detach())
        bad_step = torch.where(newly_bad, i, bad_step)
        bad_loss = torch.where(newly_bad, loss.detach().float(), bad_loss)
        if ((i + 1) % check_every == 0 or i + 1 == len(bar)) and bad_step.item() >= 0:
            _diverged(epoch, int(bad_step), len(bar), bad_loss.item())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            parts = [rec + kl, rec, kl] + ([] if neg_bound is None else [neg_bound])
            sums += torch.stack(parts)
        seen += len(idx)
        step += 1
        if i % 50 == 0 and not bar.disable:  # the only host sync in the loop, for the progress bar
            total, rec_m, kl_m = (sums[:3] / seen).tolist()
            bar.set_postfix(total=f"{total:.1f}", rec=f"{rec_m:.1f}", kl=f"{kl_m:.2f}")
    return sums, step


def _diverged(epoch: int, i: int, steps: int, value: float):
    raise UserError(f"training diverged: the loss is {value} at epoch {epoch}, step {i + 1} of {steps}; "
                    "nothing was written (try a lower train.lr, or precision fp32)")


def make_optimizer(model, p: TrainParams) -> torch.optim.Optimizer:
    return torch.optim.Adam(model.parameters(), lr=p.lr, fused=True)


@dataclass(frozen=True)
class Seeds:
    """The training's seeded sources of randomness, each its own use of the pipeline's seed: the model's
    initial weights (`init`: the global generator, seeded by the caller before it builds the model), the
    reparameterization's eps and the dynamic binarization's draws (`noise`: the global generator during
    training), the data order (`order`: the shuffle generator), the per-epoch test evaluation (`test`:
    a stream apart, so how often it runs does not change training) and the frames' draws (`frames`)."""

    init: int
    noise: int
    order: int
    test: int
    frames: int  # the fixed draws of the frames (vae/frames.py), apart from every stream above

    @classmethod
    def from_seed(cls, seed: int) -> "Seeds":
        return cls(init=seed, noise=seed, order=seed, test=evaluation_seed(seed), frames=stream_seed(seed, "frames"))


def train(model, data: Data, p: TrainParams, seeds: Seeds, device: torch.device,
          on_epoch: Callable[[dict], None] = lambda row: None, state: Optional[dict] = None,
          save_state: Callable[[dict], None] = lambda state: None, frames: Optional[Frames] = None) -> list[dict]:
    """Train in place and return the per-epoch history rows (see :func:`epoch_row`).

    on_epoch gets each finished epoch's row as it comes. save_state gets the training's state
    (state.capture) after every p.checkpoint_every epochs and after the last. Given such a `state` from a
    training with the same params (epochs aside), data and device, train continues after its epoch, to
    the same bytes an uninterrupted training gives. `frames`, when given, takes a frame before the first
    epoch and after each (frames.taken, kept in the state as well).
    """
    optimizer = make_optimizer(model, p)
    shuffle, test_draws = torch.Generator(device="cpu"), torch.Generator(device=data.x_test.device)
    history, step = begin(model, optimizer, shuffle, test_draws, seeds, state, device, frames)
    n = len(data.x_train)
    steps_per_epoch = -(-n // p.batch_size)
    for epoch in range(len(history) + 1, p.epochs + 1):
        start = time.perf_counter()
        lr = learning_rate(epoch, p)
        for group in optimizer.param_groups:
            group["lr"] = lr
        x_epoch = torch.bernoulli(data.p_train) if p.dynamic_binarization else data.x_train
        order = torch.randperm(n, generator=shuffle).to(device)
        sums, step = train_epoch(model, optimizer, x_epoch, order, p, step, steps_per_epoch,
                                 desc=f"epoch {epoch}/{p.epochs}", epoch=epoch)
        row = epoch_row(model, data, p, epoch, (sums / n).tolist(), test_draws)
        # the epoch's wall-clock end (Unix seconds) is the metric timestamp in MLflow
        row.update(kl_weight=kl_weight(step, steps_per_epoch, p), lr=lr, epoch_time=time.perf_counter() - start,
                   time=time.time())
        history.append(row)
        if frames is not None:
            frames.taken.append(frames.take(model))
        if epoch % p.checkpoint_every == 0 or epoch == p.epochs:
            save_state(capture(model, optimizer, shuffle, test_draws, history, step, device,
                               frames.taken if frames is not None else None))
        on_epoch(row)
        tqdm.write(epoch_line(row, p))
    return history


def begin(model, optimizer, shuffle: torch.Generator, test_draws: torch.Generator, seeds: Seeds,
          state: Optional[dict], device: torch.device, frames: Optional[Frames]) -> tuple[list[dict], int]:
    """Seed the streams and take the first frame (a fresh start), or put a saved state back: the history
    so far and the step count."""
    if state is not None:
        history, step = restore(state, model, optimizer, shuffle, test_draws, device)
        if frames is not None:
            frames.taken = list(state.get("frames") or [])
        return history, step
    torch.manual_seed(seeds.noise)
    shuffle.manual_seed(seeds.order)
    test_draws.manual_seed(seeds.test)
    if frames is not None:
        frames.taken = [frames.take(model)]
    return [], 0


def epoch_row(model, data: Data, p: TrainParams, epoch: int, means: list[float], test_draws: torch.Generator) -> dict:
    """An epoch's numbers (mean per-example figures, nats): the negative ELBO and its reconstruction and KL
    terms on the training set (the running average over the epoch) and on the test set; under objective
    iwae also the negative K-sample IWAE bound on both (train_neg_iwae_bound, the loss being minimised,
    and test_neg_iwae_bound). The caller adds kl_weight, lr, epoch_time and time."""
    test = evaluation.evaluate_elbo(model, data.x_test, generator=test_draws)
    row = {"epoch": epoch, "train_total": means[0], "train_rec": means[1], "train_kl": means[2],
           "test_total": test["total"], "test_rec": test["rec"], "test_kl": test["kl"]}
    if p.objective == "iwae":
        log_px = evaluation.importance_sampled(model, data.x_test, p.iw_samples, generator=test_draws)["log_px"]
        row["train_neg_iwae_bound"] = means[3]
        row["test_neg_iwae_bound"] = -log_px.double().mean().item()
    return row


def epoch_line(row: dict, p: TrainParams) -> str:
    """What a person reads after each epoch (a display only: programs read the rows)."""
    bound = (f"  -IWAE(K={p.iw_samples}) train {row['train_neg_iwae_bound']:8.2f} test "
             f"{row['test_neg_iwae_bound']:8.2f}") if p.objective == "iwae" else ""
    return (f"epoch {row['epoch']:3d}  train -ELBO {row['train_total']:8.2f} (rec {row['train_rec']:7.2f}, "
            f"KL {row['train_kl']:6.2f})  test -ELBO {row['test_total']:8.2f}{bound}  beta {row['kl_weight']:.3f}  "
            f"{row['epoch_time']:.1f}s")

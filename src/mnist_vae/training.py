"""The training loop: Adam on the (beta-weighted) negative ELBO or the IWAE bound, minibatches of a
tensor kept whole in memory (on the GPU when there is one), no per-step host syncs; and its state
(weights, Adam's moments, every random stream, the history), saved so an interrupted training resumes
to the very bytes an uninterrupted one gives."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from tqdm import tqdm

from mnist_vae import evaluation, model as model_module, objectives
from mnist_vae.errors import UserError
from mnist_vae.io import atomic_path
from mnist_vae.params import Params, TrainParams, flatten

log = logging.getLogger("mnist_vae.training")


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


def autocast(device: torch.device, precision: str):
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


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
    return int.from_bytes(hashlib.sha256(f"mnist-vae test evaluation {seed}".encode()).digest()[:8], "little")


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


def train(model, data: Data, p: TrainParams, seed: int, device: torch.device,
          on_epoch: Callable[[dict], None] = lambda row: None, state: Optional[dict] = None,
          save_state: Callable[[dict], None] = lambda state: None) -> list[dict]:
    """Train in place and return the per-epoch history rows (mean per-example figures, nats).

    Every row holds the negative ELBO and its reconstruction and KL terms on the training set (the
    running average over the epoch) and on the test set; under objective iwae also the negative K-sample
    IWAE bound on both (train_neg_iwae_bound, the loss being minimised, and test_neg_iwae_bound).
    The test evaluation draws from its own generator, so how often it runs does not change training.

    save_state gets the training's state (see capture) after every p.checkpoint_every epochs and after
    the last. Given such a `state` from a training with the same params (epochs aside), data and
    device, train continues after its epoch, to the same bytes an uninterrupted training gives.
    """
    optimizer = make_optimizer(model, p)
    shuffle = torch.Generator(device="cpu")
    test_draws = torch.Generator(device=data.x_test.device)
    if state is None:
        torch.manual_seed(seed)
        shuffle.manual_seed(seed)
        test_draws.manual_seed(evaluation_seed(seed))
        history, step = [], 0
    else:
        history, step = restore(state, model, optimizer, shuffle, test_draws, device)
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
        means = (sums / n).tolist()
        train_total, train_rec, train_kl = means[:3]
        test = evaluation.evaluate_elbo(model, data.x_test, generator=test_draws)
        row = {
            "epoch": epoch,
            "train_total": train_total, "train_rec": train_rec, "train_kl": train_kl,
            "test_total": test["total"], "test_rec": test["rec"], "test_kl": test["kl"],
        }
        if p.objective == "iwae":
            log_px = evaluation.importance_sampled(model, data.x_test, p.iw_samples, generator=test_draws)["log_px"]
            row["train_neg_iwae_bound"] = means[3]
            row["test_neg_iwae_bound"] = -log_px.double().mean().item()
        row["kl_weight"] = kl_weight(step, steps_per_epoch, p)
        row["lr"] = lr
        row["epoch_time"] = time.perf_counter() - start
        row["time"] = time.time()  # the epoch's wall-clock end (Unix seconds): the metric timestamps in MLflow
        history.append(row)
        if epoch % p.checkpoint_every == 0 or epoch == p.epochs:
            save_state(capture(model, optimizer, shuffle, test_draws, history, step, device))
        on_epoch(row)  # each finished epoch's row, as it comes
        bound = (f"  -IWAE(K={p.iw_samples}) train {row['train_neg_iwae_bound']:8.2f} test "
                 f"{row['test_neg_iwae_bound']:8.2f}") if p.objective == "iwae" else ""
        tqdm.write(
            f"epoch {epoch:3d}  train -ELBO {train_total:8.2f} (rec {train_rec:7.2f}, KL {train_kl:6.2f})  "
            f"test -ELBO {test['total']:8.2f}{bound}  beta {row['kl_weight']:.3f}  {row['epoch_time']:.1f}s"
        )
    return history


# --------------------------------------------------------------------------- the training's state


STATE_FORMAT = 1


def capture(model, optimizer, shuffle: torch.Generator, test_draws: torch.Generator, history: list[dict],
            step: int, device: torch.device) -> dict:
    """Everything the loop carries from one epoch to the next (tensors, numbers, strings:
    torch.load(weights_only=True) reads it): the weights, Adam's state, the global random stream (the
    reparameterization's eps and the dynamic binarization's draws; on CUDA the device's too), the
    shuffle and test-evaluation generators, the step count (the KL warm-up's clock) and the history.
    The weights and Adam's state are the live tensors, not copies (a copy would cost more than the
    save): write it at once, or copy.deepcopy it to keep it."""
    rng = {"torch": torch.get_rng_state(), "shuffle": shuffle.get_state(), "test_draws": test_draws.get_state()}
    if device.type == "cuda":
        rng["cuda"] = torch.cuda.get_rng_state(device)
    return {
        "format": STATE_FORMAT, "epoch": len(history), "step": step,
        "history": [dict(row) for row in history],
        "model": model.state_dict(), "optimizer": optimizer.state_dict(),
        "rng": rng,
    }


def restore(state: dict, model, optimizer, shuffle: torch.Generator, test_draws: torch.Generator,
            device: torch.device) -> tuple[list[dict], int]:
    """Put a captured state back; returns the history so far and the step count."""
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    rng = state["rng"]
    torch.set_rng_state(rng["torch"])
    if device.type == "cuda":
        torch.cuda.set_rng_state(rng["cuda"], device)
    shuffle.set_state(rng["shuffle"])
    test_draws.set_state(rng["test_draws"])
    return [dict(row) for row in state["history"]], state["step"]


# the code that decides the trajectory, besides the stage script: its digest is part of the fingerprint
TRAJECTORY_MODULES = (model_module, objectives, evaluation)


def fingerprint(params: Params, data: dict[str, str], device: torch.device, code: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Everything that decides the training's trajectory except train.epochs: a state is resumed only
    when its fingerprint equals this one. Parts, by name: every model and train param but epochs,
    checkpoint_every, device and threads (not the trajectory, or stood for by what follows), seed and
    dequantize.mode; `data`'s digests (name -> SHA-256); the torch version; the device as resolved
    (with the CPU's instruction set or the GPU's name) and torch's thread count (on the CPU a matrix
    multiply's sums depend on it); the SHA-256 of this module, model.py, objectives.py, evaluation.py
    and the files in `code` (the stage script)."""
    parts: dict[str, Any] = {k: v for k, v in flatten(params, ("seed", "dequantize", "model", "train")).items()
                             if k not in ("train.epochs", "train.checkpoint_every", "train.device", "train.threads")}
    parts.update(data)
    parts["torch"] = str(torch.__version__)
    if device.type == "cuda":
        parts["device"] = f"cuda ({torch.cuda.get_device_name(device)})"
    else:
        parts["device"] = f"{device.type} ({torch.backends.cpu.get_cpu_capability()})"
    parts["threads"] = torch.get_num_threads()
    for path in (Path(__file__), *(Path(m.__file__) for m in TRAJECTORY_MODULES), *code):
        parts[f"code {path.name}"] = hashlib.sha256(path.read_bytes()).hexdigest()
    return parts


def save_state(path: Path, state: dict, fingerprint: dict[str, Any]) -> None:
    """Write the state with its fingerprint to a temporary file, fsync it and rename it over `path`:
    killed at any moment, `path` holds the previous state or this one. A failed write (a full disk)
    raises UserError and leaves the previous state as it was."""
    try:
        with atomic_path(path, durable=True) as tmp, open(tmp, "wb") as f:
            torch.save({**state, "fingerprint": fingerprint}, f)
    except OSError as exc:
        kept = f"the previous state ({path}) is kept" if Path(path).exists() else "no state was written"
        raise UserError(f"could not write the training state {path} ({exc.strerror or exc}); {kept}: free some "
                        "space and run `dvc repro` again to resume from it") from None


def load_state(path: Path, fingerprint: dict[str, Any], epochs: int) -> Optional[dict]:
    """The state saved at `path` if training can resume from it, else None; either way one line says
    what was found (nothing when there is no file)."""
    path = Path(path)
    for stale in path.parent.glob(f".{path.name}.*.tmp"):  # left by a writer that was killed
        stale.unlink(missing_ok=True)
    if not path.exists():
        return None
    try:
        if not zipfile.is_zipfile(path):
            raise ValueError("not a torch.save archive")
        with zipfile.ZipFile(path) as archive:  # torch.load does not check the records' CRC-32: a flipped byte would load
            damaged = archive.testzip()
        if damaged:
            raise ValueError(f"{damaged} fails its CRC-32 check")
        state = torch.load(path, map_location="cpu", weights_only=True)
        if state.get("format") != STATE_FORMAT:
            raise ValueError(f"format {state.get('format')!r}, this code reads {STATE_FORMAT}")
        missing = {"epoch", "step", "history", "model", "optimizer", "rng", "fingerprint"} - state.keys()
        if missing:
            raise ValueError(f"it lacks {', '.join(sorted(missing))}")
    except Exception as exc:  # a truncated or garbled file fails in many ways: all mean "start over"
        cause = " ".join(str(exc).split())[:200] or exc.__class__.__name__
        log.info("%s is unreadable (%s); training from epoch 1", path, cause)
        return None
    changed = describe_changes(state["fingerprint"], fingerprint)
    if changed:
        log.info("%s is from another training (%s); training from epoch 1", path, changed)
        return None
    if state["epoch"] > epochs:
        log.info("%s holds %d epochs, more than train.epochs %d; training from epoch 1", path, state["epoch"], epochs)
        return None
    if state["epoch"] == epochs:  # e.g. `dvc repro -f train`: the outputs again, from the state
        log.info("%s holds all %d epochs; writing the outputs from it (delete it to retrain)", path, epochs)
    else:
        log.info("resuming from epoch %d of %d (%s)", state["epoch"] + 1, epochs, path)
    return state


def describe_changes(saved: dict[str, Any], current: dict[str, Any], most: int = 4) -> str:
    """'train.lr 0.001 -> 0.002, seed 0 -> 1': the parts of two fingerprints that differ ('' if none)."""
    def short(value):
        text = repr(value) if not isinstance(value, str) else value
        return text if len(text) <= 24 else text[:12] + "..."
    keys = [k for k in dict.fromkeys([*current, *saved]) if saved.get(k) != current.get(k)]
    out = [f"{k} {short(saved.get(k, '(none)'))} -> {short(current.get(k, '(none)'))}" for k in keys[:most]]
    if len(keys) > most:
        out.append(f"and {len(keys) - most} more")
    return ", ".join(out)

"""The training's state: everything the loop carries from one epoch to the next (weights, Adam's
moments, every random stream, the step count, the history), saved atomically and durably after each
checkpoint so that an interrupted or extended training resumes to the very bytes an uninterrupted one
gives, and the fingerprint that decides whether a saved state belongs to this training."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any, Optional

import torch

from mnist_vae.errors import FileProblem, UserError
from mnist_vae.files import load_tensors, save_tensors
from mnist_vae.params import Params, flatten

log = logging.getLogger("mnist_vae.vae.state")

STATE_FORMAT = 1


def capture(model, optimizer, shuffle: torch.Generator, test_draws: torch.Generator, history: list[dict],
            step: int, device: torch.device, frames: list | None = None) -> dict:
    """Everything the loop carries from one epoch to the next (tensors, numbers, strings:
    torch.load(weights_only=True) reads it): the weights, Adam's state, the global random stream (the
    reparameterization's eps and the dynamic binarization's draws; on CUDA the device's too), the
    shuffle and test-evaluation generators, the step count (the KL warm-up's clock), the history and the
    frames taken so far (vae/frames.py; uint8 tensors).
    The weights and Adam's state are the live tensors, not copies (a copy would cost more than the
    save): write it at once, or copy.deepcopy it to keep it."""
    rng = {"torch": torch.get_rng_state(), "shuffle": shuffle.get_state(), "test_draws": test_draws.get_state()}
    if device.type == "cuda":
        rng["cuda"] = torch.cuda.get_rng_state(device)
    return {
        "format": STATE_FORMAT, "epoch": len(history), "step": step,
        "history": [dict(row) for row in history],
        "model": model.state_dict(), "optimizer": optimizer.state_dict(),
        "rng": rng, "frames": list(frames or []),
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


# the code that decides the trajectory, besides the stage script (modules of this package, named as files
# to keep the loop's own imports free of a cycle): their digests are part of the fingerprint
TRAJECTORY_MODULES = ("training.py", "device.py", "model.py", "objectives.py", "evaluation.py")


def fingerprint(params: Params, data: dict[str, str], device: torch.device, code: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Everything that decides the training's trajectory except train.epochs: a state is resumed only
    when its fingerprint equals this one. Parts, by name: every model and train param but epochs,
    checkpoint_every, device and threads (not the trajectory, or stood for by what follows), seed and
    dequantize.mode; `data`'s digests (name -> SHA-256); the torch version; the device as resolved
    (with the CPU's instruction set or the GPU's name) and torch's thread count (on the CPU a matrix
    multiply's sums depend on it); the SHA-256 of this module, TRAJECTORY_MODULES and the files in `code`
    (the stage script)."""
    parts: dict[str, Any] = {k: v for k, v in flatten(params, ("seed", "dequantize", "model", "train")).items()
                             if k not in ("train.epochs", "train.checkpoint_every", "train.device", "train.threads")}
    parts.update(data)
    parts["torch"] = str(torch.__version__)
    if device.type == "cuda":
        parts["device"] = f"cuda ({torch.cuda.get_device_name(device)})"
    else:
        parts["device"] = f"{device.type} ({torch.backends.cpu.get_cpu_capability()})"
    parts["threads"] = torch.get_num_threads()
    for path in (Path(__file__), *(Path(__file__).parent / name for name in TRAJECTORY_MODULES), *code):
        parts[f"code {path.name}"] = hashlib.sha256(path.read_bytes()).hexdigest()
    return parts


def save_state(path: Path, state: dict, fingerprint: dict[str, Any]) -> None:
    """Write the state with its fingerprint to a temporary file, fsync it and rename it over `path`:
    killed at any moment, `path` holds the previous state or this one. A failed write (a full disk)
    raises UserError and leaves the previous state as it was."""
    try:
        save_tensors(path, {**state, "fingerprint": fingerprint}, durable=True)
    except OSError as exc:
        kept = f"the previous state ({path}) is kept" if Path(path).exists() else "no state was written"
        raise UserError(f"could not write the training state {path} ({exc.strerror or exc}); {kept}: free some "
                        "space, and training resumes from it on the next run") from None


def load_state(path: Path, fingerprint: dict[str, Any], epochs: int) -> Optional[dict]:
    """The state saved at `path` if training can resume from it, else None; either way one line says
    what was found (nothing when there is no file)."""
    path = Path(path)
    for stale in path.parent.glob(f".{path.name}.*.tmp"):  # left by a writer that was killed
        stale.unlink(missing_ok=True)
    if not path.exists():
        return None
    try:
        state = load_tensors(path, "training state", check=_check_state, crc=True)
    except FileProblem as exc:  # a truncated or garbled file: start over
        log.info("%s; training from epoch 1", exc)
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


def _check_state(state: dict) -> None:
    if state.get("format") != STATE_FORMAT:
        raise ValueError(f"format {state.get('format')!r}, this code reads {STATE_FORMAT}")
    missing = {"epoch", "step", "history", "model", "optimizer", "rng", "fingerprint"} - state.keys()
    if missing:
        raise ValueError(f"it lacks {', '.join(sorted(missing))}")


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

"""Where and in what precision the VAE runs: the device a params name resolves to, and bf16 autocast."""

from __future__ import annotations

import contextlib

import torch

from mnist_vae.errors import UserError


def pick_device(name: str) -> torch.device:
    """train.device as a torch device: auto is CUDA when there is one, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("train.device is 'cuda' but no CUDA device is available; use 'auto' or 'cpu'")
    return torch.device(name)


def autocast(device: torch.device, precision: str):
    """The context a training step runs in: bf16 autocast on `device`, or nothing for fp32."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()

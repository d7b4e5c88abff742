"""The tasks of a trained model, on a LoadedModel (api/loading.py): sample, encode, decode, reconstruct,
interpolate, traverse, and the pixels in and out of the model (preprocess, postprocess).

The model sees each image as a float32 row of 784 pixels in [0, 1], dequantized as it was trained
(``dequantize.mode``). :func:`preprocess` maps uint8 pixels (0..255) or float intensities (pixel/255, in
[0, 1]) to that input with the *expected value* of the training dequantization (data/dequantize.py), so
it is deterministic. :func:`postprocess` maps decoder means in [0, 1] back to uint8 28x28 images.

These are what the ``mnist-vae`` command and the served model run, so the three give the same numbers
for the same inputs and seed.
"""

from __future__ import annotations

import math
import warnings
from typing import Optional

import numpy as np
import torch

from mnist_vae.api.loaded import LoadedModel
from mnist_vae.data.dequantize import check_mode, expected_input
from mnist_vae.data.geometry import PIXELS, SIDE
from mnist_vae.errors import UserError
from mnist_vae.vae import objectives, samplers
from mnist_vae.vae.latents import linear_path, spherical_path

# --------------------------------------------------------------------------- pixels in and out


def preprocess(images, mode: str) -> torch.Tensor:
    """Images -> the model's input under dequantization `mode` (deterministic: the noise's mean).

    images: uint8 pixels 0..255, or floats in [0, 1] read as pixel / 255 (what Pillow's "L" image
        divided by 255, or ``data/raw`` / 255, gives); shaped (28, 28), (784,), (N, 28, 28) or (N, 784).
    mode: the ``dequantize.mode`` the model was trained with (a loaded model's ``.dequantize``).
    Returns float32 (N, 784) in [0, 1] (N = 1 for a single image): data.dequantize.expected_input, the
    mean of the training input over its noise.
    """
    check_mode(mode)
    a = images.detach().cpu().numpy() if torch.is_tensor(images) else np.asarray(images)
    if a.dtype == np.uint8:
        p = a.astype(np.float64)
    elif np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer):
        if np.issubdtype(a.dtype, np.integer):
            if a.size and (a.min() < 0 or a.max() > 255):
                raise UserError("integer pixels must lie in 0..255")
            p = a.astype(np.float64)
        else:
            if a.size and not (np.isfinite(a).all() and a.min() >= 0 and a.max() <= 1):
                raise UserError("float images must be intensities in [0, 1] (pixel / 255); pass uint8 for 0..255")
            p = a.astype(np.float64) * 255.0
    else:
        raise UserError(f"images must be uint8 or float, got {a.dtype}")
    if a.shape in ((SIDE, SIDE), (PIXELS,)):
        p = p.reshape(1, PIXELS)
    elif a.ndim in (2, 3) and a.shape[1:] in ((SIDE, SIDE), (PIXELS,)):
        p = p.reshape(len(p), PIXELS)
    else:
        raise UserError(f"images must be shaped (28, 28), (784,), (N, 28, 28) or (N, 784), got {a.shape}")
    return torch.from_numpy(np.ascontiguousarray(expected_input(p, mode), dtype=np.float32))


def postprocess(means) -> np.ndarray:
    """Decoder means E[x|z] in [0, 1], shaped (..., 784) -> uint8 images (..., 28, 28), round(255 x)."""
    a = means.detach().cpu().numpy() if torch.is_tensor(means) else np.asarray(means)
    if a.shape[-1] != PIXELS:
        raise UserError(f"postprocess expects (..., 784) means, got {a.shape}")
    return np.rint(np.clip(a, 0, 1) * 255).astype(np.uint8).reshape(*a.shape[:-1], SIDE, SIDE)


# --------------------------------------------------------------------------- tasks


def as_latents(z, latent_dim: int) -> torch.Tensor:
    """One latent vector (d,) or several (N, d) -> a float32 (N, d) CPU tensor; a UserError unless d == latent_dim."""
    try:
        z = torch.as_tensor(np.asarray(z, dtype=np.float32) if not torch.is_tensor(z) else z, dtype=torch.float32)
    except (ValueError, TypeError):
        raise UserError(f"latent vectors must be lists of {latent_dim} numbers") from None
    if z.ndim == 1:
        z = z.unsqueeze(0)
    if z.ndim != 2 or z.shape[1] != latent_dim:
        raise UserError(f"latent vectors must have length {latent_dim} (this model's latent_dim), got shape {tuple(z.shape)}")
    if not torch.isfinite(z).all():
        raise UserError("latent vectors must be finite numbers")
    return z.cpu()


def _device(model: LoadedModel) -> torch.device:
    return next(model.vae.parameters()).device


def _latents(model: LoadedModel, z) -> torch.Tensor:
    return as_latents(z, model.latent_dim).to(_device(model))


def _inputs(model: LoadedModel, x) -> torch.Tensor:
    x = torch.as_tensor(x, dtype=torch.float32)
    if x.ndim != 2 or x.shape[1] != PIXELS:
        raise UserError(f"model inputs must be (N, 784) rows from preprocess, got shape {tuple(x.shape)}")
    return x.to(_device(model))


def resolve_sampler(model: LoadedModel, name: Optional[str] = None,
                    temperature: Optional[float] = None) -> tuple[str, float, Optional[str]]:
    """The sampler and temperature to draw from when `name` and `temperature` are asked for (None: the model's
    defaults), and a note saying why when that is not simply what was asked.

    No name: the model's best sampler as evaluate recorded it (model.choice), else the prior. No temperature:
    the one evaluate scored that sampler at (the prior's is 1), else 1. A model without fitted samplers draws
    from the prior when asked for a fitted kind, and says so; a samplers or choice file that is corrupt, stale
    or from another version, when the answer needs it, or a name the model does not have, is a UserError."""
    names = samplers.available(model.samplers)
    note = None
    if name is None:
        for problem in (model.sampler_problem, model.choice_problem):
            if problem:
                raise problem
        name = model.default_sampler
        note = (f"sampler {name}: the model's best, {model.choice.reason()}" if model.choice else
                f"sampler {name}: no best sampler recorded beside the model" if model.samplers else None)
    elif name not in names:
        if name in samplers.KINDS and model.sampler_problem:
            raise model.sampler_problem
        if name not in samplers.KINDS or model.samplers is not None:
            raise UserError(f"unknown sampler {name!r}; this model has: {', '.join(names)}")
        name, note = samplers.PRIOR, f"this model has no fitted sampler {name!r}; sampling from the prior"
    if temperature is None:
        temperature = model.choice.temperature_of(name) if model.choice else 1.0
    if not (temperature >= 0 and math.isfinite(temperature)):
        raise UserError(f"the temperature must be a finite number >= 0, got {temperature}")
    return name, temperature, note


@torch.no_grad()
def sample(model: LoadedModel, n: int, seed: int = 0, temperature: Optional[float] = None,
           sampler: Optional[str] = None) -> torch.Tensor:
    """n decoder means E[x|z], (n, 784) float32 in [0, 1] on the CPU, of z drawn with a CPU generator seeded
    with `seed` from `sampler`: the model's prior ("prior", z = T * model.sample_prior), a fitted sampler of
    the model (samplers.available(model.samplers)), whose spread T scales the same way, or, when None, the
    model's best one (``model.default_sampler``, which evaluate chose by sample FID). `temperature` None is
    the one evaluate scored that sampler at (resolve_sampler). A model without fitted samplers asked for one
    samples from the prior and warns (UserWarning)."""
    if n < 1:
        raise UserError(f"the number of samples must be at least 1, got {n}")
    asked = sampler
    name, temperature, note = resolve_sampler(model, sampler, temperature)
    if note and asked is not None:  # asked for a sampler it does not have; the default's note is only news to a reader
        warnings.warn(note, UserWarning, stacklevel=2)
    g = torch.Generator().manual_seed(int(seed))
    return decode(model, model.sampler(name).draw(n, g, temperature))


@torch.no_grad()
def encode(model: LoadedModel, x) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 784) inputs from preprocess -> (mu, log sigma^2) of q(z|x), each (N, latent_dim), on the CPU."""
    mu, logvar = model.vae.encode(_inputs(model, x))
    return mu.float().cpu(), logvar.float().cpu()


@torch.no_grad()
def decode(model: LoadedModel, z) -> torch.Tensor:
    """Latent vectors (N, latent_dim) or (latent_dim,) -> decoder means (N, 784) in [0, 1] on the CPU."""
    return model.vae.mean(model.vae.decode(_latents(model, z))).float().cpu()


@torch.no_grad()
def reconstruct(model: LoadedModel, x) -> torch.Tensor:
    """(N, 784) inputs -> E[x | z = mu(x)], (N, 784) in [0, 1]: decoded from the encoder mean (deterministic)."""
    return decode(model, encode(model, x)[0])


def interpolate(z1, z2, steps: int, slerp: bool = False) -> torch.Tensor:
    """`steps` points from z1 to z2 (both ends included), as (steps, d): the straight path (1 - a) z1 + a z2,
    or with `slerp` the spherical one (vae/latents.py)."""
    if steps < 2:
        raise UserError(f"--steps must be at least 2, got {steps}")
    z1 = torch.as_tensor(z1, dtype=torch.float32).reshape(-1)
    z2 = torch.as_tensor(z2, dtype=torch.float32).reshape(-1)
    if z1.shape != z2.shape:
        raise UserError(f"the two ends have different lengths ({len(z1)} and {len(z2)})")
    return spherical_path(z1, z2, steps) if slerp else linear_path(z1, z2, steps)


@torch.no_grad()
def kl_order(model: LoadedModel, x) -> tuple[list[int], list[float]]:
    """Latent units ordered by their mean KL(q(z_j|x) || N(0, 1)) over the inputs x, largest first, and
    each unit's mean KL (nats), indexed by unit. Units with KL near 0 are inactive (collapsed)."""
    mu, logvar = encode(model, x)
    kl = objectives.kl_per_dim(mu.double(), logvar.double()).mean(0)
    order = torch.argsort(kl, descending=True, stable=True).tolist()
    return order, kl.tolist()


@torch.no_grad()
def traverse(model: LoadedModel, dims: list[int], values, base=None) -> torch.Tensor:
    """For each unit j in `dims`, decode `base` with z_j set to each of `values`: (len(dims), len(values), 784).

    base: the latent vector to start from (default: zeros, the prior's mean)."""
    values = torch.as_tensor(values, dtype=torch.float32).reshape(-1)
    z0 = torch.zeros(model.latent_dim) if base is None else _latents(model, base)[0].cpu()
    rows = []
    for j in dims:
        if not 0 <= j < model.latent_dim:
            raise UserError(f"--dim {j} is out of range: this model's units are 0..{model.latent_dim - 1}")
        z = z0.repeat(len(values), 1)
        z[:, j] = values
        rows.append(decode(model, z))
    return torch.stack(rows)

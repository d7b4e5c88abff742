"""The latent-space explorer: one self-contained HTML page in which the trained decoder runs.

:func:`build` packs everything the page needs into the page itself: the decoder's layers with their
weights (little-endian float32, base64), the test encodings' latent map, a small gallery of test digits
with their encoder means, the units' KL and activity, the prior (the VampPrior's K components' means and
standard deviations, so "Random z" draws from the mixture), the model's key numbers, and its best sampler
(vae/samplers/choice.py: the lowest sample FID evaluate recorded), which the page's "draw from the best
sampler" button draws from: the prior as "Random z" does, or a fitted mixture, picking a component k with
the mixture's weights and computing z = means[k] + T L[k] eps in float64 at the temperature T evaluate
scored it at, as the gmm sampler's draw does (the page's random numbers are the browser's, so a seed does
not give torch's draws). Every fitted sampler today is a mixture the page can draw; one it could not (a
flow, say) would have to come as a bank of codes drawn in Python, which the page would say. The page
(``explorer.html`` beside this module, plain HTML, CSS and JavaScript) decodes in the browser with the
same arithmetic as PyTorch's float32 forward pass, so it needs no server, no library and no request of
any kind: it works opened from disk, offline, or as an MLflow artifact.

Arithmetic in the page: weights, activations and outputs are float32 (``Float32Array``), each layer's
output is rounded to float32 as PyTorch's tensors are; each dot product is accumulated in a double and
rounded once, which stays within PyTorch's own float32 summation error (its summation order depends on
the BLAS kernel, so no JavaScript order reproduces it bit for bit). The likelihood's mean E[x|z] follows
``objectives.likelihood_mean`` operation by operation, each rounded to float32.
"""

from __future__ import annotations

import base64
import json
import math
from importlib import resources
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from mnist_vae.data.geometry import PIXELS
from mnist_vae.files import atomic_path
from mnist_vae.report.figures import latent_plane
from mnist_vae.vae import evaluation, objectives, samplers
from mnist_vae.vae.samplers import choice

TEMPLATE = "explorer.html"
DATA_MARK = "/*__EXPLORER_DATA__*/null"  # where the template takes the page's data
MAP_POINTS = 3000  # test encodings drawn on the latent map
GALLERY_PER_DIGIT = 2  # test digits of each label in the gallery
SLIDER_SPAN = 3.0  # sliders reach at least +-3 prior standard deviations


def _b64(array, dtype: str) -> str:
    return base64.b64encode(np.ascontiguousarray(np.asarray(array), dtype=dtype).tobytes()).decode("ascii")


def _f32(t) -> str:
    """A tensor or array as base64 little-endian float32, the page's Float32Array."""
    if torch.is_tensor(t):
        t = t.detach().cpu().float().numpy()
    return _b64(t, "<f4")


def _leaves(module: nn.Module):
    children = list(module.children())
    if not children:
        yield module
    for child in children:
        yield from _leaves(child)


def decoder_layers(decoder: nn.Module, latent_dim: int) -> list[dict]:
    """The decoder as the page runs it: a list of layers with their shapes and weights, in order.

    Supported: Linear, ReLU, Tanh, Unflatten, Flatten, and ConvTranspose2d (square kernel and stride,
    no output padding, dilation or groups); anything else raises ValueError.
    """
    shape: tuple[int, ...] = (latent_dim,)
    layers = []
    for m in _leaves(decoder):
        if isinstance(m, nn.Linear):
            layers.append({"op": "linear", "n_in": m.in_features, "n_out": m.out_features,
                           "weight": _f32(m.weight), "bias": _f32(m.bias)})
            shape = (m.out_features,)
        elif isinstance(m, (nn.ReLU, nn.Tanh)):
            layers.append({"op": "relu" if isinstance(m, nn.ReLU) else "tanh"})
        elif isinstance(m, nn.Unflatten):
            shape = tuple(m.unflattened_size)
        elif isinstance(m, nn.Flatten):
            shape = (math.prod(shape),)
        elif isinstance(m, nn.ConvTranspose2d) and _plain_transpose(m):
            c, h, w = shape
            k, s, p = m.kernel_size[0], m.stride[0], m.padding[0]
            shape = (m.out_channels, (h - 1) * s - 2 * p + k, (w - 1) * s - 2 * p + k)
            layers.append({"op": "convt", "c_in": c, "c_out": m.out_channels, "h": h, "w": w, "kernel": k,
                           "stride": s, "padding": p, "weight": _f32(m.weight), "bias": _f32(m.bias)})
        else:
            raise ValueError(f"the explorer cannot run a decoder layer {m.__class__.__name__} in the page")
    if math.prod(shape) != PIXELS:
        raise ValueError(f"the decoder's output has shape {shape}, not 784 pixels")
    return layers


def _plain_transpose(m: nn.ConvTranspose2d) -> bool:
    return (m.bias is not None and m.groups == 1 and m.dilation == (1, 1) and m.output_padding == (0, 0)
            and m.kernel_size[0] == m.kernel_size[1] and m.stride[0] == m.stride[1]
            and m.padding[0] == m.padding[1] and isinstance(m.padding, tuple))


def _gallery(y: np.ndarray) -> list[int]:
    """Indices of the first GALLERY_PER_DIGIT test digits of each label, label by label."""
    return [int(i) for label in np.unique(y) for i in np.flatnonzero(y == label)[:GALLERY_PER_DIGIT]]


def _model_summary(model) -> dict:
    """The model's make-up, as the page's header and decoder need it."""
    config = model.config
    return {
        "architecture": config.architecture, "activation": config.activation,
        "likelihood": config.likelihood, "cb_series_below": objectives.CB_SERIES_BELOW,
        "latent_dim": model.latent_dim,
        "hidden_dims": list(config.hidden_dims),
        "conv_channels": list(config.conv_channels) if config.architecture == "conv" else None,
        "parameters": sum(p.numel() for p in model.parameters()),
        "decoder_parameters": sum(p.numel() for p in model.decoder.parameters()),
    }


@torch.no_grad()
def page_data(model, fitted, x_test: torch.Tensor, y_test: np.ndarray, seed: int, threshold: float,
              best: choice.Choice | None = None) -> dict:
    """Everything the page shows, from the model and the test set (see the module docstring)."""
    model = model.eval()
    x = x_test.float().reshape(len(x_test), -1).to(next(model.parameters()).device)
    y = np.asarray(y_test)
    mu, logvar = evaluation.encode_all(model, x)
    mu, logvar = mu.cpu(), logvar.cpu()
    # in float32, as evaluate computes them for metrics/eval.json
    kl = objectives.kl_per_dim(mu, logvar).mean(0)
    active = evaluation.active_unit_mask(mu, threshold)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        elbo = evaluation.elbo_parts(model, x)
    plane = latent_plane(mu.double().numpy())
    points = plane.coordinates(mu[:MAP_POINTS].double().numpy())
    gallery = _gallery(y)
    reach = np.maximum(SLIDER_SPAN, np.ceil(mu.abs().amax(0).numpy() * 10) / 10)  # to every test encoding
    return {
        "model": _model_summary(model),
        "numbers": {
            "n_test": len(x), "test_nelbo": elbo["nelbo"], "test_rec": elbo["rec"], "test_kl": elbo["kl"],
            "active_units": int(active.sum()), "active_unit_threshold": threshold, "seed": seed,
        },
        "prior": prior_data(model),
        "decoder": decoder_layers(model.decoder, model.latent_dim),
        "units": {
            "kl": kl.tolist(),
            "variance": mu.var(0).nan_to_num(0.0).tolist(),
            "active": active.tolist(),
            "order": sorted(range(model.latent_dim), key=lambda j: (-float(kl[j]), j)),
            "reach": reach.tolist(),
        },
        "map": {
            "origin": _f32(plane.origin), "axes": _f32(plane.axes), "labels": list(plane.labels),
            "points": _f32(points), "digits": _b64(y[:MAP_POINTS], "u1"), "n": len(points),
        },
        "sampler": _sampler(model, fitted, best),
        "gallery": {
            "index": gallery, "digits": [int(y[i]) for i in gallery],
            "images": _b64(np.rint(x_test[gallery].reshape(len(gallery), -1).cpu().numpy() * 255), "u1"),
            "mu": _f32(mu[gallery]),
        },
    }


def _sampler(model, fitted: samplers.Fitted | None, best: choice.Choice | None) -> dict | None:
    """The best sampler for the page's draw button: its name, temperature, FID and why it is the best, and for a
    fitted mixture its weights (K,), means (K, d) and Cholesky factors (K, d, d) as base64 little-endian
    float64; None without a recorded choice."""
    if best is None:
        return None
    out = {"name": best.sampler, "temperature": best.temperature, "fid": best.fid[best.sampler], "reason": best.reason()}
    if best.sampler == samplers.PRIOR:
        return out  # the page draws from the prior itself
    arrays = samplers.mixture_arrays(model, fitted, best.sampler)
    return {**out, "k": len(arrays["weights"]), **{key: _b64(value, "<f8") for key, value in arrays.items()}}


@torch.no_grad()
def prior_data(model) -> dict:
    """The model's prior as the page's "Random z" draws from it: N(0, I), or the VampPrior's K components
    (means and standard deviations, fixed after training), one picked uniformly per draw."""
    if model.config.prior == "standard":
        return {"name": "standard"}
    mu, logvar = model.prior_components()
    return {"name": model.config.prior, "components": len(mu), "mu": _f32(mu), "std": _f32(torch.exp(0.5 * logvar))}


def render(data: dict) -> str:
    """The page: the template with `data` in it as JSON (escaped so no string closes the script)."""
    template = resources.files("mnist_vae.report").joinpath(TEMPLATE).read_text(encoding="utf-8")
    if template.count(DATA_MARK) != 1:
        raise RuntimeError(f"{TEMPLATE} must hold {DATA_MARK} exactly once")
    payload = json.dumps(data, separators=(",", ":"), allow_nan=False).replace("</", "<\\/")
    return template.replace(DATA_MARK, payload)


OFF_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">
<title>VAE latent explorer (off)</title></head>
<body style="font: 15px system-ui, sans-serif; margin: 2em">
<p>The latent explorer is turned off (<code>render.explorer: false</code> in params.yaml).
Set it to <code>true</code> and render again to make it.</p>
</body></html>
"""


def write_off_notice(path: Path) -> None:
    """What `path` holds when the explorer is turned off: a short page saying so (DVC needs the file)."""
    with atomic_path(path) as tmp:
        tmp.write_text(OFF_PAGE, encoding="utf-8")


def write(path: Path, model, fitted, x_test: torch.Tensor, y_test: np.ndarray, seed: int, threshold: float,
          best: choice.Choice | None = None) -> None:
    """Write the explorer page for `model` (its fitted samplers, and the best sampler `best` for the draw
    button) to `path` (atomically)."""
    page = render(page_data(model, fitted, x_test, y_test, seed, threshold, best))
    with atomic_path(path) as tmp:
        tmp.write_text(page, encoding="utf-8")

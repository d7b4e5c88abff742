"""Scoring a trained VAE: ELBO and its parts, an importance-weighted log-likelihood, the notebook's
latent statistics, and a posterior-collapse report (KL per dimension, active units, I(x; z)).

Under the VampPrior (model.prior vamp) the KL and log p(z) are the mixture's (Monte Carlo KL, exact
log-density); active units and I(x; z) are properties of q alone and mean the same under either prior;
the per-unit KL stays the KL to N(0, I) (a mixture does not split by unit), and a `vamp` section adds the
KL to the mixture and how many pseudo-inputs the test codes use."""

from __future__ import annotations

import math

import torch

from mnist_vae.data.geometry import PIXELS
from mnist_vae.vae import objectives

LN2 = math.log(2)


@torch.no_grad()
def encode_all(model, x: torch.Tensor, batch_size: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
    parts = [model.encode(xb) for xb in x.split(batch_size)]
    return torch.cat([m for m, _ in parts]).float(), torch.cat([v for _, v in parts]).float()


@torch.no_grad()
def evaluate_elbo(model, x: torch.Tensor, batch_size: int = 1000,
                  generator: torch.Generator | None = None) -> dict[str, float]:
    """Mean per-example negative ELBO, reconstruction and KL (one sample of z per example, drawn from
    `generator`, or the global generator when None)."""
    model.eval()
    sums = torch.zeros(2, device=x.device, dtype=torch.float64)
    for xb in x.split(batch_size):
        rec, kl = objectives.negative_elbo(model, xb, generator)
        sums += torch.stack([rec.sum(), kl.sum()]).double()
    rec, kl = (sums / len(x)).tolist()
    return {"total": rec + kl, "rec": rec, "kl": kl}


@torch.no_grad()
def importance_sampled(model, x: torch.Tensor, k: int, batch_size: int = 100, max_rows: int = 4096,
                       generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """Per example: the IWAE estimate of log p(x) with K samples, and the K-sample ELBO parts.

    The K samples of a batch are processed in blocks of at most `max_rows` decoded rows (4096 x 784
    logits: about 13 MB, which stays in cache better than bigger blocks; at least one sample per block),
    whose log-weights are combined with log-sum-exp, so memory does not grow with K. The normal draws
    are made one sample (batch x latent) at a time, in order, from `generator` (the global one when
    None), so they do not depend on the block size and neither does any number. On the CPU, when
    batch x latent is a multiple of 16 (the default 100 x 20), these are the very draws a single
    randn(K, batch, latent) would make.
    """
    model.eval()
    out: dict[str, list[torch.Tensor]] = {"log_px": [], "rec": [], "kl": []}
    for xb in x.split(batch_size):
        lse, rec_sum, kl = None, 0.0, None
        per_block = max(1, max_rows // len(xb))
        for first in range(0, k, per_block):
            eps = torch.empty((min(per_block, k - first), len(xb), model.latent_dim), device=xb.device, dtype=xb.dtype)
            for row in eps:
                row.normal_(generator=generator)
            log_w, log_px_z, kl = objectives.log_importance_weights(model, xb, len(eps), eps)
            part = torch.logsumexp(log_w, dim=0)
            lse = part if lse is None else torch.logaddexp(lse, part)
            rec_sum = rec_sum - log_px_z * len(eps)
        out["log_px"].append(lse - math.log(k))
        out["rec"].append(rec_sum / k)
        out["kl"].append(kl)
    return {name: torch.cat(parts) for name, parts in out.items()}


def elbo_parts(model, x: torch.Tensor) -> dict[str, float]:
    """Mean per-example negative ELBO, reconstruction and KL with one z per example (as logged in training)."""
    parts = evaluate_elbo(model, x)
    return {"nelbo": parts["total"], "rec": parts["rec"], "kl": parts["kl"]}


def bits_per_dim(nll_nats: float) -> float:
    """NLL of data dequantized as (pixel + u) / 256, on the 0-255 scale, in bits per dimension."""
    return (nll_nats + PIXELS * math.log(256)) / (PIXELS * LN2)


def active_unit_mask(mu: torch.Tensor, threshold: float = 0.01) -> torch.Tensor:
    """Per unit: does its posterior mean vary over the data, Var_x(E_q[z_j | x]) > threshold (Burda et al. 2015)?"""
    return mu.var(dim=0) > threshold


def active_units(mu: torch.Tensor, threshold: float = 0.01) -> int:
    """How many units are active (see :func:`active_unit_mask`)."""
    return int(active_unit_mask(mu, threshold).sum())


def mutual_information(mu: torch.Tensor, logvar: torch.Tensor, max_elements: int = 1 << 22) -> float:
    """I(x; z) under q (Hoffman & Johnson 2016), estimated as in He et al. 2019:
    E_x E_q(z|x)[log q(z|x)] - E_q(z)[log q(z)], with q(z) the mixture of the N posteriors given.

    One z is drawn per x; log q(z_i) needs every pair (z_i, x_j), computed for a block of z_i at a time
    with at most `max_elements` (block x N x d) entries per temporary (16 MB by default, at least one
    row), so memory grows linearly in N; the block size changes no number."""
    n, d = mu.shape
    neg_entropy = (-0.5 * d * math.log(2 * math.pi) - 0.5 * (1 + logvar).sum(-1)).mean()
    z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)  # one z per x
    var = logvar.exp()
    log_det = logvar.sum(-1)[None]  # (1, x_j)
    log_qz = []
    for zb in z.split(max(1, max_elements // (n * d))):
        dev = (zb[:, None, :] - mu[None, :, :]).pow(2) / var[None]  # (z_i, x_j, d)
        log_q_zi_xj = -0.5 * (dev.sum(-1) + d * math.log(2 * math.pi) + log_det)
        log_qz.append(torch.logsumexp(log_q_zi_xj, dim=1) - math.log(n))
    return float(neg_entropy - torch.cat(log_qz).mean())


@torch.no_grad()
def most_likely_components(model, mu: torch.Tensor) -> torch.Tensor:
    """For each code mu_i (rows of (N, d)), the VampPrior component most likely to have drawn it:
    argmax_k q(mu_i | u_k) (the components have equal weights)."""
    comp_mu, comp_logvar = model.prior_components()
    blocks = objectives.mixture_blocks(mu.to(comp_mu.device, comp_mu.dtype), len(comp_mu))
    return torch.cat([objectives.component_log_densities(zb, comp_mu, comp_logvar).argmax(-1) for zb in blocks])


def components_used(model, mu: torch.Tensor) -> int:
    """How many of the VampPrior's K components are the most likely one for at least one of the codes mu."""
    return len(most_likely_components(model, mu).unique())


@torch.no_grad()
def latent_statistics(model, mu: torch.Tensor, logvar: torch.Tensor, n_generated: int = 100) -> dict[str, float]:
    """The notebook's 'Latent Space Analysis' numbers."""
    generated = model.sample(n_generated)
    return {
        "mu_mean": mu.mean().item(), "mu_std": mu.std().item(),
        "logvar_mean": logvar.mean().item(), "logvar_std": logvar.std().item(),
        "generated_mean": generated.mean().item(), "generated_std": generated.std().item(),
        "generated_min": generated.min().item(), "generated_max": generated.max().item(),
    }


def evaluate(model, x_test: torch.Tensor, x_train_slice: torch.Tensor, p, likelihood: str, data_mode: str) -> dict:
    """Everything evaluate writes to metrics/eval.json."""
    iw = importance_sampled(model, x_test, p.iw_samples, p.batch_size)
    log_px = iw["log_px"]
    n = len(log_px)
    test = {
        "nelbo": (iw["rec"] + iw["kl"]).mean().item(),
        "rec": iw["rec"].mean().item(),
        "kl": iw["kl"].mean().item(),
        "iw_nll": -log_px.mean().item(),
        "iw_nll_se": (log_px.std() / math.sqrt(n)).item() if n > 1 else 0.0,
    }
    # a normalised density over the data's space: continuous likelihoods on continuous data, or binary data
    normalised = objectives.NORMALISED[likelihood] or data_mode == "binarize"
    if data_mode == "uniform" and normalised:
        test["bpd"] = bits_per_dim(test["iw_nll"])
        test["bpd_elbo"] = bits_per_dim(test["nelbo"])
    mu, logvar = encode_all(model, x_test)
    kl_dims = objectives.kl_per_dim(mu, logvar).mean(0)
    mi_n = min(p.mi_examples, len(mu))
    out = {
        "test": test,
        "train_slice": elbo_parts(model, x_train_slice) if len(x_train_slice) else {},
        "likelihood": {
            "name": likelihood, "iw_samples": p.iw_samples, "n_test": n,
            "normalised": normalised,
            "note": "nats per example" if normalised else
            "Bernoulli score on continuous pixels: not a normalised log-density, only comparable to itself",
        },
        "latent": latent_statistics(model, mu, logvar),
        "posterior": {
            "active_units": active_units(mu, p.active_unit_threshold),
            "mutual_info": mutual_information(mu[:mi_n], logvar[:mi_n]),
            # KL(q(z_j|x) || N(0, 1)) per unit under either prior (a mixture prior does not split by unit)
            "kl_per_dim": [round(v, 5) for v in kl_dims.tolist()],
        },
        "prior": model.config.prior,
    }
    if model.config.prior == "vamp":
        out["vamp"] = {
            "components": model.config.vamp_components,
            # the test KL above: the mean over the iw_samples draws z ~ q(z|x) of log q(z|x) - log p(z)
            "kl_to_mixture": test["kl"],
            "components_used": components_used(model, mu),
            "kl_to_standard_normal": kl_dims.sum().item(),
        }
    return out

"""Latent samplers: where the z of a generated digit comes from.

A VAE's decoder is trained on codes of real digits, whose aggregate posterior q(z) = E_x q(z|x) is
not the prior p(z); prior draws that land where q(z) has no mass decode badly (the *prior hole*).
Ex-post density estimation (Ghosh et al. 2020; Dai & Wipf 2019's two-stage VAE) fits a density to
the codes of the training digits after training and draws z from it instead.

Samplers, by name: ``prior``, the model's own prior (``model.sample_prior`` / ``model.log_prior``, nothing
to fit), and the fitted kinds in KINDS, each a module of this package (gmm.py), fitted to the codes: the
encoder means mu(x) (``fit_on: mu``) or one draw z ~ q(z|x) per digit (``fit_on: draws``).

The fitted densities are stored (:func:`save`) as tensors, numbers and strings, loaded with
torch.load(weights_only=True) (nothing is unpickled), together with the SHA-256 of the checkpoint they
were fitted to, which :func:`load` checks. :func:`get` gives a :class:`Sampler` to draw from and to score
codes with, whatever its kind.

The fit never sees the last ``sampler.held_out`` training digits (:func:`split`): evaluate decodes their
mu(x) as the decoder's floor, the score a perfect sampler of these codes would reach. Which sampler is the
model's best, by the FIDs evaluate recorded, is choice.py's (models/best_sampler.json).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Protocol

import numpy as np
import torch

from mnist_vae.errors import FileProblem, UserError
from mnist_vae.files import load_tensors, save_tensors, sha256_file
from mnist_vae.vae.evaluation import encode_all
from mnist_vae.vae.samplers import gmm

PRIOR = "prior"
KINDS = {gmm.KIND: gmm}  # the densities this package fits, by name
FORMAT = 2  # 1: fitted to the first fit_examples digits, nothing held out
FILE_NAME = "sampler.pt"  # beside the checkpoint: models/sampler.pt


class Sampler(Protocol):
    """A latent density to draw z from and to score codes with."""

    name: str  # prior, or the fitted kind

    def draw(self, n: int, generator: torch.Generator, temperature: float = 1.0) -> torch.Tensor:
        """n draws z, (n, latent_dim) float32 on the model's device, from the CPU `generator`."""

    def log_density(self, z: torch.Tensor) -> torch.Tensor:
        """log q(z) per row of z (nats, float64, where z is)."""


class Prior:
    """The model's own prior as a Sampler: the temperature scales the standard prior's draws."""

    name = PRIOR

    def __init__(self, model):
        self.model = model

    def draw(self, n: int, generator: torch.Generator, temperature: float = 1.0) -> torch.Tensor:
        if temperature != 1.0 and self.model.config.prior != "standard":
            raise UserError(f"the temperature scales the standard prior N(0, I); this model's prior is "
                            f"{self.model.config.prior}: leave the temperature at 1, or use a fitted sampler")
        z = self.model.sample_prior(n, generator)
        return z if temperature == 1.0 else temperature * z

    def log_density(self, z: torch.Tensor) -> torch.Tensor:
        # on the model's device (the codes are on the CPU), the answer back where z is
        return self.model.log_prior(z.to(self.model.fc_mu_logvar.weight.device, torch.float64)).to(z.device)


@dataclass(frozen=True)
class Fitted:
    """The samplers fitted to one checkpoint, as the sampler stage stored them (see :func:`save`)."""

    state: dict

    @property
    def names(self) -> list[str]:
        return list(self.state["samplers"])

    @property
    def fit_on(self) -> str:
        return self.state["fit_on"]


def available(fitted: Optional[Fitted]) -> list[str]:
    """The samplers a model can draw from: the prior, then its fitted samplers."""
    return [PRIOR, *(fitted.names if fitted else [])]


def get(model, fitted: Optional[Fitted], name: str) -> Sampler:
    """The sampler `name` of a model with these fitted samplers (None: none); a UserError naming the samplers
    it has when it has no such sampler."""
    if name == PRIOR:
        return Prior(model)
    if fitted is None or name not in fitted.names:
        raise UserError(f"unknown sampler {name!r}; this model has: {', '.join(available(fitted))}")
    s = fitted.state["samplers"][name]
    return KINDS[s["kind"]].Sampler(s, model.fc_mu_logvar.weight.device)


# ---------------------------------------------------------------- fitting


@torch.no_grad()
def codes(model, x: torch.Tensor, fit_on: str, generator: torch.Generator, batch_size: int = 1000) -> torch.Tensor:
    """The codes of the digits x (N, 784) as float64 (N, latent_dim) on the CPU: the encoder means mu(x)
    (fit_on "mu") or one draw z = mu + sigma * eps per digit (fit_on "draws", eps from `generator`)."""
    mu, logvar = (t.double().cpu() for t in encode_all(model.eval(), x, batch_size))
    if fit_on == "mu":
        return mu
    if fit_on != "draws":
        raise UserError(f"unknown sampler.fit_on {fit_on!r}; use mu or draws")
    return mu + torch.randn(mu.shape, generator=generator, dtype=torch.float64) * torch.exp(0.5 * logvar)


def split(n_train: int, p) -> tuple[int, int]:
    """(digits fitted, first held-out digit) of n_train training digits under SamplerParams p: the last
    p.held_out digits are held out, and the fit takes the first p.fit_examples (0: all) of the others."""
    start = n_train - p.held_out
    if start < 1:
        raise UserError(f"sampler.held_out is {p.held_out} but there are only {n_train} training digits; lower "
                        f"sampler.held_out below {n_train}")
    return min(p.fit_examples or start, start), start


def _fit_one(name: str, z: torch.Tensor, p, seed: int, say: Callable[[str], None]) -> dict:
    if name == gmm.KIND:
        return gmm.fit(z, p.gmm_components, p.gmm_max_iter, p.gmm_reg_covar, seed, lambda line: say(f"{name}: {line}"))
    raise UserError(f"unknown sampler {name!r} in sampler.names; known: {', '.join(KINDS)}")


def fit(model, x: torch.Tensor, p, seed: int, say: Callable[[str], None] = lambda line: None) -> tuple[dict, dict]:
    """Fit the samplers `p.names` (SamplerParams) to the codes of the training digits x, but the last
    p.held_out (:func:`split`); `say` hears the fit's progress.

    Returns the state to :func:`save` (without the checkpoint digest) and a summary with the fit's
    timings for metrics/sampler.json."""
    if gmm.KIND in p.names:
        import sklearn.mixture  # noqa: F401  (before the clocks start: a fit's time is the fit's own)
    n, held_start = split(len(x), p)
    start = time.perf_counter()
    z = codes(model, x[:n], p.fit_on, torch.Generator().manual_seed(seed))
    encode_time = time.perf_counter() - start
    if not torch.isfinite(z).all():
        raise UserError("the codes to fit hold NaN or infinite values: the model diverged; train it again")
    state = {"format": FORMAT, "latent_dim": int(model.latent_dim), "fit_on": p.fit_on, "n_codes": n,
             "n_train": len(x), "held_out_start": held_start, "seed": seed, "samplers": {}}
    summary = {"fit_on": p.fit_on, "n_codes": n, "held_out": len(x) - held_start, "encode_time": encode_time,
               "samplers": {}}
    for name in p.names:
        start, cpu = time.perf_counter(), time.process_time()
        s = state["samplers"][name] = _fit_one(name, z, p, seed, say)
        summary["samplers"][name] = {
            "fit_time": time.perf_counter() - start, "fit_cpu_time": time.process_time() - cpu,
            **KINDS[name].summary(s),
            "train_code_log_density": float(KINDS[name].Sampler(s, z.device).log_density(z).mean()),
        }
    return state, summary


def held_out(fitted: Fitted, x: torch.Tensor, path: Path) -> torch.Tensor:
    """The training digits x (all of them, as the fit was given) that the fit never saw: the last ones; a
    FileProblem naming `path` (the samplers' file) when x is not the set they were fitted to."""
    if len(x) != fitted.state["n_train"]:
        raise FileProblem(path, "stale", f"{path} was fitted to {fitted.state['n_train']} training digits, not "
                                         f"these {len(x)}; fit it again")
    return x[fitted.state["held_out_start"]:]


# ---------------------------------------------------------------- storing


def save(path: Path, state: dict, checkpoint_sha256: str) -> None:
    """Write the fitted samplers with the digest of their checkpoint (tensors, numbers and strings only)."""
    save_tensors(path, {**state, "checkpoint_sha256": checkpoint_sha256})


def load(path: Path, checkpoint: Optional[Path] = None) -> Fitted:
    """The samplers stored in `path`, checked: their format and shapes, and, when `checkpoint` is given,
    that they were fitted to that checkpoint's bytes (a FileProblem otherwise)."""
    state = load_tensors(path, "sampler file", check=lambda state: _check(state, Path(path)))
    if checkpoint is not None and state["checkpoint_sha256"] != sha256_file(checkpoint):
        raise FileProblem(path, "stale", f"{path} was fitted to another checkpoint than {checkpoint} (SHA-256 "
                                         f"{state['checkpoint_sha256'][:12]}...); fit it again")
    return Fitted(state)


def _check(state: dict, path: Path) -> None:
    if state.get("format") != FORMAT:  # stale, not corrupt: the stage that made it makes it again
        raise FileProblem(path, "stale", f"{path} holds samplers in format {state.get('format')} (another mnist-vae); "
                                         f"this version reads format {FORMAT}: fit them again")
    if not isinstance(state["checkpoint_sha256"], str):
        raise ValueError("no checkpoint digest")
    if not 0 < state["n_codes"] <= state["held_out_start"] < state["n_train"]:
        raise ValueError("its fitted and held-out digits overlap")
    for name, s in state["samplers"].items():
        if name not in KINDS or s.get("kind") != name:
            raise ValueError(f"unknown sampler {name!r}")
        KINDS[name].check(s, state["latent_dim"])


def beside(checkpoint: Path) -> Path:
    """Where the pipeline keeps a checkpoint's samplers: models/vae.pt -> models/sampler.pt."""
    return Path(checkpoint).parent / FILE_NAME


# ---------------------------------------------------------------- scoring


@torch.no_grad()
def code_log_density(model, fitted: Optional[Fitted], x: torch.Tensor, fit_on: str,
                     generator: torch.Generator) -> dict:
    """Mean log-density (nats) of the codes of the digits x under the prior and each fitted sampler: how
    well each density fits codes it was not fitted to (the test digits'). Codes as the samplers were
    fitted: mu(x), or one draw of q(z|x) per digit from `generator`."""
    z = codes(model, x, fit_on, generator)
    return {"codes": fit_on, "n": len(z),
            **{name: float(get(model, fitted, name).log_density(z).mean()) for name in available(fitted)}}


def mixture_arrays(model, fitted: Fitted, name: str) -> dict[str, np.ndarray]:
    """A fitted mixture's weights, means and Cholesky factors as float64 arrays (for the explorer page)."""
    return get(model, fitted, name).arrays()

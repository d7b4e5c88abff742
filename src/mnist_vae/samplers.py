"""Latent samplers: where the z of a generated digit comes from.

A VAE's decoder is trained on codes of real digits, whose aggregate posterior q(z) = E_x q(z|x) is
not the prior p(z); prior draws that land where q(z) has no mass decode badly (the *prior hole*).
Ex-post density estimation (Ghosh et al. 2020; Dai & Wipf 2019's two-stage VAE) fits a density to
the codes of the training digits after training and draws z from it instead.

Samplers, by name:

- ``prior``: the model's own prior, ``model.sample_prior`` / ``model.log_prior`` (nothing to fit);
- ``gmm``: a Gaussian mixture with full covariances, fitted by scikit-learn's ``GaussianMixture``
  (EM, k-means initialisation seeded with the pipeline's seed) to the codes: the encoder means mu(x)
  (``fit_on: mu``) or one draw z ~ q(z|x) per digit (``fit_on: draws``).

The fitted densities are stored as tensors, numbers and strings (``torch.save``, loaded with
``weights_only=True``: nothing is unpickled) together with the SHA-256 of the checkpoint they were
fitted to, which :func:`load` checks. Drawing is done in torch from the stored parameters: the
component k ~ Categorical(weights) and eps ~ N(0, I) come from a CPU generator (as the prior's
normals do, so a seed gives the same z on every device), then z = means[k] + T * L[k] eps on the
model's device, with L[k] the Cholesky factor of covariance k and T the temperature.
"""

from __future__ import annotations

import time
import zipfile
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from mnist_vae.errors import UserError
from mnist_vae.evaluation import encode_all
from mnist_vae.io import atomic_path, sha256_file

PRIOR = "prior"
KINDS = ("gmm",)  # the densities this module fits
FORMAT = 1
FILE_NAME = "sampler.pt"  # beside the checkpoint: models/sampler.pt


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


def fit_gmm(z: torch.Tensor, components: int, max_iter: int = 100, reg_covar: float = 1e-6, seed: int = 0) -> dict:
    """A full-covariance Gaussian mixture fitted to the rows of z by scikit-learn (EM from a seeded
    k-means start), as {kind, weights (K,), means (K, d), scale_tril (K, d, d), converged, n_iter}."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.mixture import GaussianMixture
    from threadpoolctl import threadpool_limits
    import warnings

    n = len(z)
    if components > n:
        raise UserError(f"sampler.gmm_components is {components} but there are only {n} codes to fit; "
                        f"lower sampler.gmm_components to at most {n} (or raise sampler.fit_examples)")
    data = z.double().cpu().numpy()
    if not np.isfinite(data).all():
        raise UserError("the codes to fit hold NaN or infinite values; the model diverged: retrain it (`dvc repro -f train`)")
    mixture = GaussianMixture(components, covariance_type="full", max_iter=max_iter, reg_covar=reg_covar,
                              random_state=seed)
    # one BLAS/OpenMP thread: the EM's per-component products are too small to share, and on a busy 2-core
    # machine 2 threads took 59-77 s of wall and 76-82 s of CPU for the default fit, 1 thread 39-48 s and 34-36 s
    with warnings.catch_warnings(), threadpool_limits(1):
        warnings.simplefilter("ignore", ConvergenceWarning)  # recorded as `converged`
        try:
            mixture.fit(data)
        except (ValueError, np.linalg.LinAlgError) as exc:
            raise UserError(f"the {components}-component mixture could not be fitted to {n} codes "
                            f"({' '.join(str(exc).split())[:200]}); lower sampler.gmm_components or raise "
                            "sampler.gmm_reg_covar") from None
    covariances = torch.from_numpy(mixture.covariances_)
    scale_tril, info = torch.linalg.cholesky_ex(covariances)
    if info.any() or not torch.isfinite(covariances).all():
        raise UserError(f"the {components}-component mixture has a singular covariance; lower "
                        "sampler.gmm_components or raise sampler.gmm_reg_covar")
    return {"kind": "gmm", "weights": torch.from_numpy(mixture.weights_).double(),
            "means": torch.from_numpy(mixture.means_).double(), "scale_tril": scale_tril.double(),
            "converged": bool(mixture.converged_), "n_iter": int(mixture.n_iter_)}


def fit(model, x: torch.Tensor, p, seed: int) -> tuple[dict, dict]:
    """Fit the samplers `p.names` (SamplerParams) to the codes of the training digits x.

    Returns the state to :func:`save` (without the checkpoint digest) and a summary with the fit's
    timings for metrics/sampler.json."""
    if "gmm" in p.names:
        import sklearn.mixture  # noqa: F401  (before the clocks start: a fit's time is the fit's own)
    n = min(p.fit_examples or len(x), len(x))
    start = time.perf_counter()
    z = codes(model, x[:n], p.fit_on, torch.Generator().manual_seed(seed))
    encode_time = time.perf_counter() - start
    state = {"format": FORMAT, "latent_dim": int(model.latent_dim), "fit_on": p.fit_on, "n_codes": n,
             "seed": seed, "samplers": {}}
    summary = {"fit_on": p.fit_on, "n_codes": n, "encode_time": encode_time, "samplers": {}}
    for name in p.names:
        start, cpu = time.perf_counter(), time.process_time()
        if name == "gmm":
            state["samplers"][name] = fit_gmm(z, p.gmm_components, p.gmm_max_iter, p.gmm_reg_covar, seed)
        else:
            raise UserError(f"unknown sampler {name!r} in sampler.names; known: {', '.join(KINDS)}")
        fitted = state["samplers"][name]
        summary["samplers"][name] = {
            "fit_time": time.perf_counter() - start, "fit_cpu_time": time.process_time() - cpu,
            "components": len(fitted["weights"]),
            "converged": fitted["converged"], "n_iter": fitted["n_iter"],
            "train_code_log_density": float(log_density(model, name, z, state).mean()),
        }
    return state, summary


# ---------------------------------------------------------------- storing


def save(path: Path, state: dict, checkpoint_sha256: str) -> None:
    """Write the fitted samplers with the digest of their checkpoint (tensors, numbers and strings only)."""
    state = {**state, "checkpoint_sha256": checkpoint_sha256}
    with atomic_path(path) as tmp, open(tmp, "wb") as f:  # a file object: equal states give equal bytes
        torch.save(state, f)


def _unreadable(path: Path, why: str) -> UserError:
    return UserError(f"{path} is not a readable sampler file ({why}); rerun `dvc repro -f sampler`")


def load(path: Path, checkpoint: Optional[Path] = None) -> dict:
    """The samplers stored in `path`, checked: their format and shapes, and, when `checkpoint` is given,
    that they were fitted to that checkpoint's bytes (a UserError naming the fix otherwise)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} is missing; run `dvc repro sampler` to fit the samplers")
    if not zipfile.is_zipfile(path):
        raise _unreadable(path, "not a torch.save zip archive")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        _check(state)
    except Exception as exc:
        cause = " ".join(str(exc).split())[:200] or exc.__class__.__name__
        raise _unreadable(path, f"{exc.__class__.__name__}: {cause}") from None
    if checkpoint is not None and state["checkpoint_sha256"] != sha256_file(checkpoint):
        raise UserError(f"{path} was fitted to another checkpoint than {checkpoint} (SHA-256 "
                        f"{state['checkpoint_sha256'][:12]}...); refit it with `dvc repro sampler`")
    return state


def _check(state) -> None:
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"format {state.get('format') if isinstance(state, dict) else type(state).__name__}, "
                         f"expected {FORMAT}")
    d = state["latent_dim"]
    if not isinstance(state["checkpoint_sha256"], str):
        raise ValueError("no checkpoint digest")
    for name, s in state["samplers"].items():
        if name not in KINDS or s.get("kind") != name:
            raise ValueError(f"unknown sampler {name!r}")
        w, m, L = s["weights"], s["means"], s["scale_tril"]
        k = len(w)
        if w.shape != (k,) or m.shape != (k, d) or L.shape != (k, d, d):
            raise ValueError(f"{name}: shapes {tuple(w.shape)}, {tuple(m.shape)}, {tuple(L.shape)} do not fit latent_dim {d}")
        if not all(torch.isfinite(t).all() for t in (w, m, L)) or (w < 0).any() or abs(float(w.sum()) - 1) > 1e-6:
            raise ValueError(f"{name}: weights or parameters are not a valid mixture")
        if not (torch.diagonal(L, dim1=-2, dim2=-1) > 0).all() or not torch.equal(L, L.tril()):
            raise ValueError(f"{name}: scale_tril is not lower triangular with a positive diagonal")


def beside(checkpoint: Path) -> Path:
    """Where the pipeline keeps a checkpoint's samplers: models/vae.pt -> models/sampler.pt."""
    return Path(checkpoint).parent / FILE_NAME


def attach(model, checkpoint: Path) -> None:
    """Give a model loaded from `checkpoint` the samplers fitted to it (models/sampler.pt beside it):
    `model.samplers`, the stored state or None when there is no such file, and `model.sampler_problem`,
    the one-line reason when the file is there but corrupt or fitted to another checkpoint."""
    path = beside(checkpoint)
    model.samplers, model.sampler_problem = None, None
    if path.is_file():
        try:
            model.samplers = load(path, checkpoint)
        except UserError as exc:
            model.sampler_problem = str(exc)


# ---------------------------------------------------------------- using


def fitted(model) -> dict:
    """The model's fitted samplers by name ({} if none)."""
    state = getattr(model, "samplers", None)
    return dict(state["samplers"]) if state else {}


def available(model) -> list[str]:
    """The samplers a model can draw from: the prior, then its fitted samplers."""
    return [PRIOR, *fitted(model)]


def resolve(model, name: str) -> tuple[str, Optional[str]]:
    """The sampler to draw from when `name` is asked for, and a note when it is not `name`.

    A model without fitted samplers draws from the prior when asked for a fitted kind, and says so;
    a stored sampler file that is corrupt or from another checkpoint, or a name the model does not
    have, is a UserError naming the samplers it has."""
    names = available(model)
    if name in names:
        return name, None
    problem = getattr(model, "sampler_problem", None)
    if name in KINDS and problem:
        raise UserError(problem)
    if name in KINDS and not fitted(model):
        return PRIOR, (f"this model has no fitted sampler {name!r} (fit one with `dvc repro sampler`); "
                       "sampling from the prior")
    raise UserError(f"unknown sampler {name!r}; this model has: {', '.join(names)}")


def _mixture(s: dict, device) -> torch.distributions.MixtureSameFamily:
    return torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(probs=s["weights"].to(device)),
        torch.distributions.MultivariateNormal(s["means"].to(device), scale_tril=s["scale_tril"].to(device)))


def draw(model, name: str, n: int, generator: torch.Generator, temperature: float = 1.0) -> torch.Tensor:
    """n draws z (n, latent_dim), float32 on the model's device, from the sampler `name` (see the module
    doc): the prior's are temperature * model.sample_prior(n, generator)."""
    if name == PRIOR:
        if temperature != 1.0 and model.config.prior != "standard":
            raise UserError(f"the temperature scales the standard prior N(0, I); this model's prior is "
                            f"{model.config.prior}: leave the temperature at 1, or use a fitted sampler")
        z = model.sample_prior(n, generator)
        return z if temperature == 1.0 else temperature * z
    s = _state(model, name)
    device = model.fc_mu_logvar.weight.device
    k = torch.multinomial(s["weights"], n, replacement=True, generator=generator)
    eps = torch.randn(n, s["means"].shape[1], generator=generator, dtype=torch.float64)
    k, eps = k.to(device), eps.to(device)
    z = s["means"].to(device)[k] + temperature * (s["scale_tril"].to(device)[k] @ eps.unsqueeze(-1)).squeeze(-1)
    return z.float()


def log_density(model, name: str, z: torch.Tensor, state: Optional[dict] = None) -> torch.Tensor:
    """log q(z) per row of z under the sampler `name` (nats, float64): the model's log_prior for the prior,
    the mixture's log-density (torch.distributions) otherwise. `state` overrides the model's samplers."""
    if name == PRIOR:  # on the model's device (the codes are on the CPU), the answer back where z is
        return model.log_prior(z.to(model.fc_mu_logvar.weight.device, torch.float64)).to(z.device)
    s = state["samplers"][name] if state else _state(model, name)
    return _mixture(s, z.device).log_prob(z.double())


def _state(model, name: str) -> dict:
    s = fitted(model).get(name)
    if s is None:
        raise UserError(f"unknown sampler {name!r}; this model has: {', '.join(available(model))}")
    return s


def mixture_arrays(model, name: str) -> dict[str, np.ndarray]:
    """A fitted mixture's weights, means and Cholesky factors as float64 arrays (for the explorer page)."""
    s = _state(model, name)
    return {key: s[key].double().numpy() for key in ("weights", "means", "scale_tril")}


@torch.no_grad()
def code_log_density(model, x: torch.Tensor, fit_on: str, names: list[str], generator: torch.Generator) -> dict:
    """Mean log-density (nats) of the codes of the digits x under the prior and each named sampler: how
    well each density fits codes it was not fitted to (the test digits'). Codes as the samplers were
    fitted: mu(x), or one draw of q(z|x) per digit from `generator`."""
    z = codes(model, x, fit_on, generator)
    out = {"codes": fit_on, "n": len(z), PRIOR: float(log_density(model, PRIOR, z).mean())}
    for name in names:
        out[name] = float(log_density(model, name, z).mean())
    return out


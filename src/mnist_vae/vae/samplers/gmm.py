"""The `gmm` sampler: a Gaussian mixture with full covariances, fitted by scikit-learn's GaussianMixture (EM
from a k-means start seeded with the pipeline's seed), drawn and scored in torch from its stored tensors.

Stored as {kind, weights (K,), means (K, d), scale_tril (K, d, d), converged, n_iter}: float64 tensors,
a bool and an int. A draw: the component k ~ Categorical(weights) and eps ~ N(0, I) from the CPU generator
given (so a seed gives the same z on every device), then z = means[k] + T * L[k] eps on the model's
device, with L[k] the Cholesky factor of covariance k and T the temperature.

The fit runs a fixed number of EM iterations (sampler.gmm_max_iter, 10 by default: on the 30-epoch
default and continuous Bernoulli models, 20 iterations or EM run to convergence gave FIDs within 1.6 of
10's, higher on one model and lower on the other, for about two to five times the CPU time;
benchmarks/results/sampler_candidates.json), PROGRESS_EVERY at a time so that a long
fit says how far it is; a fit that diverges is one line naming sampler.gmm_reg_covar, and returns nothing.
"""

from __future__ import annotations

import ctypes
import time
import warnings
from contextlib import contextmanager
from typing import Callable, Iterator, Optional

import numpy as np
import torch

from mnist_vae.errors import UserError, one_line

KIND = "gmm"
PROGRESS_EVERY = 5  # EM iterations between two progress lines
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # glibc's mallopt parameters (malloc.h)
LOG_DENSITY_BLOCK = 1 << 22  # rows x components x latent_dim of one block of log_density (32 MB of float64)


def fit(z: torch.Tensor, components: int, max_iter: int = 10, reg_covar: float = 1e-6, seed: int = 0,
        say: Optional[Callable[[str], None]] = None) -> dict:
    """A full-covariance Gaussian mixture fitted to the rows of z (see the module doc for what it returns).

    EM runs PROGRESS_EVERY iterations at a time (scikit-learn's warm start: the same iterations, and the
    same bytes, as one call), and `say` hears a line after each block. A fit that diverges (a singular
    covariance, a NaN) is a UserError naming sampler.gmm_reg_covar; nothing is returned."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.mixture import GaussianMixture
    from threadpoolctl import threadpool_limits

    n = len(z)
    if components > n:
        raise UserError(f"sampler.gmm_components is {components} but there are only {n} codes to fit; lower "
                        f"sampler.gmm_components to at most {n} (or raise sampler.fit_examples, lower sampler.held_out)")
    mixture = GaussianMixture(components, covariance_type="full", max_iter=min(PROGRESS_EVERY, max_iter),
                              reg_covar=reg_covar, random_state=seed, warm_start=True)
    x, done, cpu = z.double().cpu().numpy(), 0, time.process_time()
    # one BLAS/OpenMP thread: the EM's per-component products are too small to share, and on a busy 2-core
    # machine 2 threads took 59-77 s of wall and 76-82 s of CPU for the default fit, 1 thread 39-48 s and 34-36 s
    with warnings.catch_warnings(), threadpool_limits(1), _freed_memory_kept():
        warnings.simplefilter("ignore", ConvergenceWarning)  # recorded as `converged`
        warnings.simplefilter("ignore", RuntimeWarning)  # a NaN on the way: checked below, said in one line
        while done < max_iter and not (done and mixture.converged_):
            mixture.max_iter = min(PROGRESS_EVERY, max_iter - done)
            try:
                mixture.fit(x)
            except (ValueError, np.linalg.LinAlgError, FloatingPointError) as exc:
                raise _diverged(components, n, done, reg_covar, one_line(exc, 200)) from None
            done += mixture.n_iter_
            if not (np.isfinite(mixture.lower_bound_) and np.isfinite(mixture.means_).all()
                    and np.isfinite(mixture.covariances_).all()):
                raise _diverged(components, n, done, reg_covar, "a NaN or infinite parameter")
            if say:
                say(f"EM iteration {done}/{max_iter}: mean log-likelihood {mixture.lower_bound_:.3f} nats per code, "
                    f"{time.process_time() - cpu:.1f}s of CPU{', converged' if mixture.converged_ else ''}")
    covariances = torch.from_numpy(mixture.covariances_)
    scale_tril, info = torch.linalg.cholesky_ex(covariances)
    if info.any():
        raise _diverged(components, n, done, reg_covar, "a singular covariance")
    return {"kind": KIND, "weights": torch.from_numpy(mixture.weights_).double(),
            "means": torch.from_numpy(mixture.means_).double(), "scale_tril": scale_tril.double(),
            "converged": bool(mixture.converged_), "n_iter": int(done)}


@contextmanager
def _freed_memory_kept() -> Iterator[None]:
    """Where the C library is glibc: keep the memory EM frees for its next iteration. Each iteration allocates
    (codes x components) float64 temporaries of 160 MB, which glibc maps fresh and unmaps on free, so every
    iteration page-faults them in again; with mmap off and the heap untrimmed it reuses them. The same bytes,
    the same peak memory (1.6 GB), and the default fit took 41 s of CPU instead of 52-57 s on an idle AMD EPYC.
    Elsewhere (macOS, musl, Windows) nothing changes. Afterwards glibc's defaults are set (not a user's own
    MALLOC_* settings: mallopt cannot read them back; and glibc's adaptive mmap threshold stays off for the
    rest of the process, which changes no result) and the heap kept is handed back (malloc_trim)."""
    try:
        libc = ctypes.CDLL(None)
    except (OSError, TypeError):  # no handle on the process's own C library (Windows)
        libc = None
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is None:
        yield
        return
    mallopt(M_MMAP_MAX, 0)
    mallopt(M_TRIM_THRESHOLD, 1 << 30)
    try:
        yield
    finally:
        mallopt(M_MMAP_MAX, 65536)  # glibc's defaults
        mallopt(M_TRIM_THRESHOLD, 128 * 1024)
        trim = getattr(libc, "malloc_trim", None)  # glibc's; a C library may have mallopt without it
        if trim is not None:
            trim(0)


def _diverged(components: int, n: int, done: int, reg_covar: float, what: str) -> UserError:
    return UserError(f"the {components}-component mixture diverged on {n} codes after {done} EM iterations ({what}); "
                     f"raise sampler.gmm_reg_covar (now {reg_covar:g}) or lower sampler.gmm_components")


def check(s: dict, latent_dim: int) -> None:
    """Raise ValueError unless `s` is a valid stored mixture in `latent_dim` dimensions."""
    w, m, L = s["weights"], s["means"], s["scale_tril"]
    k = len(w)
    if w.shape != (k,) or m.shape != (k, latent_dim) or L.shape != (k, latent_dim, latent_dim):
        raise ValueError(f"{KIND}: shapes {tuple(w.shape)}, {tuple(m.shape)}, {tuple(L.shape)} do not fit latent_dim {latent_dim}")
    if not all(torch.isfinite(t).all() for t in (w, m, L)) or (w < 0).any() or abs(float(w.sum()) - 1) > 1e-6:
        raise ValueError(f"{KIND}: weights or parameters are not a valid mixture")
    if not (torch.diagonal(L, dim1=-2, dim2=-1) > 0).all() or not torch.equal(L, L.tril()):
        raise ValueError(f"{KIND}: scale_tril is not lower triangular with a positive diagonal")


def summary(s: dict) -> dict:
    """What metrics/sampler.json says of a fitted mixture."""
    return {"components": len(s["weights"]), "converged": s["converged"], "n_iter": s["n_iter"]}


class Sampler:
    """Draws from, and scores codes under, a stored mixture."""

    name = KIND

    def __init__(self, s: dict, device: torch.device):
        self.s, self.device = s, device

    def draw(self, n: int, generator: torch.Generator, temperature: float = 1.0) -> torch.Tensor:
        """n draws z (n, d), float32 on the device (see the module doc)."""
        s = self.s
        k = torch.multinomial(s["weights"], n, replacement=True, generator=generator)
        eps = torch.randn(n, s["means"].shape[1], generator=generator, dtype=torch.float64)
        k, eps = k.to(self.device), eps.to(self.device)
        scale = s["scale_tril"].to(self.device)[k]
        z = s["means"].to(self.device)[k] + temperature * (scale @ eps.unsqueeze(-1)).squeeze(-1)
        return z.float()

    def log_density(self, z: torch.Tensor) -> torch.Tensor:
        """log q(z) per row (nats, float64), by torch.distributions, a block of rows at a time (a (rows, K, d)
        temporary for all 50,000 codes and 400 components would be 3.2 GB)."""
        s = self.s
        mixture = torch.distributions.MixtureSameFamily(
            torch.distributions.Categorical(probs=s["weights"].to(z.device)),
            torch.distributions.MultivariateNormal(s["means"].to(z.device), scale_tril=s["scale_tril"].to(z.device)))
        rows = max(1, LOG_DENSITY_BLOCK // s["means"].numel())
        return torch.cat([mixture.log_prob(block.double()) for block in z.split(rows)]) if len(z) else z.new_zeros(0, dtype=torch.float64)

    def arrays(self) -> dict[str, np.ndarray]:
        """The weights, means and Cholesky factors as float64 arrays (for the explorer page)."""
        return {key: self.s[key].double().numpy() for key in ("weights", "means", "scale_tril")}

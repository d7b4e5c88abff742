"""Candidate latent densities ("fitted samplers") of trained VAEs, side by side, scored as the project scores samples.

For each model (a vae.pt; its params.yaml beside it, when there is one, gives the dequantization) this script:

1. encodes the training digits to their encoder means mu(x) (samplers.codes, fit_on "mu"): codes of digits
   0..49,999 are the fit codes, codes of digits 50,000..59,999 the held-out codes (the sampler stage's split
   with the default sampler.held_out); the test digits' codes are scored too;
2. fits each candidate density to the fit codes (the first `fit_codes` of them), timing the fit in CPU
   seconds (time.process_time, one thread);
3. draws 10,000 z from it with a seeded CPU generator, decodes them (decoder means, to_pixel_scale) and
   scores them against the 10,000 test digits in the project classifier's feature space: FID, precision
   and recall (k = 3), class entropy -- the functions of quality.sample_quality, with the test digits'
   k-NN radii computed once per run;
4. reports the mean log-density (nats) of the held-out and the test codes under the density, and whether
   two draws with the same seed give the same z.

Every candidate is a samplers.Sampler (draw(n, generator, temperature), log_density(z)). The mixture rows
(gmm*) are the product's own: samplers.gmm.fit and samplers.gmm.Sampler, so a gmm row is what the sampler
stage fits and evaluate draws with those settings (gmm400_it10 is today's default, SamplerParams).

Reference rows: the model's prior, the decoded held-out codes mu(x) ("decoder floor": what a perfect sampler
of these codes would score) and the real training digits (quality.reference, model independent).

Candidates (see CANDIDATES): Gaussian mixtures with full covariances (the product's gmm fit) and
scikit-learn's BayesianGaussianMixture; zuko normalizing flows (NSF, MAF) on standardised codes,
early-stopped on 10 % of the fit codes; Dai & Wipf's two-stage VAE (a small second VAE on the standardised
codes, its prior decoded twice); a Gaussian kernel density. Each can also be drawn at temperatures T < 1
(mixture: z = mean_k + T L_k eps, as gmm.Sampler; flow: its base noise scaled by T; two-stage VAE: its prior
draw scaled by T; kernel density: its bandwidth scaled by T), listed as "<candidate>@T".

zuko is not a dependency of the project: the flow rows need `pip install zuko` (it is imported only when a
flow is fitted; the results were measured with zuko 1.6.0).

    OMP_NUM_THREADS=1 python benchmarks/sampler_candidates.py --model default=runs/default/vae.pt \
        --model cb=runs/cb/vae.pt [--candidates gmm400_it20 nsf_s ...] [-o benchmarks/results/sampler_candidates.json]

The JSON is rewritten after every candidate, merged with what the file already holds (a candidate already
there is skipped unless --force), so partial results survive an interruption. --table prints the file's
results as Markdown tables. --quick is a smoke test of the script itself (a few thousand codes, 500 draws,
2 epochs, at most 10 components), written to a scratch file unless -o says otherwise; its numbers mean
nothing.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import copy
import json
import math
import platform
import subprocess
import tempfile
import time
import warnings
from importlib import metadata
from pathlib import Path

import torch
import torch.nn as nn
import yaml

from mnist_vae.data.dequantize import to_pixel_scale
from mnist_vae.files import load_npz
from mnist_vae.params import QualityParams
from mnist_vae.scoring import classifier, quality
from mnist_vae.vae import samplers
from mnist_vae.vae.model import load_checkpoint
from mnist_vae.vae.samplers import gmm

torch.set_num_threads(1)

# training digits 0..49,999 fit, 50,000..59,999 held out: the sampler stage's split (samplers.split) of the 60,000
# training digits under the default sampler.held_out (10,000) and fit_examples (0: all the others)
N_FIT, N_HELD = 50_000, 10_000
QUICK = dict(fit=2_000, held=500, n_samples=500, epochs=2, components=10)  # --quick's sizes

# ---------------------------------------------------------------- candidates
# name -> settings; "kind" picks the fitter. temperatures: extra rows drawn from the same fit at T < 1.
CANDIDATES: dict[str, dict] = {
    # the product's default sampler when this benchmark began (sampler: 50 components, 30,000 codes, 100 iterations)
    "gmm50_30k": dict(kind="gmm", components=50, fit_codes=30_000, max_iter=100, reg_covar=1e-6),
    "gmm50": dict(kind="gmm", components=50, fit_codes=50_000, max_iter=100, reg_covar=1e-6),
    "gmm100": dict(kind="gmm", components=100, fit_codes=50_000, max_iter=100, reg_covar=1e-6),
    "gmm200": dict(kind="gmm", components=200, fit_codes=50_000, max_iter=100, reg_covar=1e-6,
                   temperatures=[0.9, 0.8]),
    "bgmm200": dict(kind="bgmm", components=200, fit_codes=50_000, max_iter=100, reg_covar=1e-6,
                    weight_concentration_prior_type="dirichlet_process"),
    # normalizing flows (zuko) on standardised codes; 10 % of the fit codes held out for early stopping
    "nsf_untuned": dict(kind="flow", flow="NSF", transforms=4, hidden=[256, 256], bins=8, epochs=40, lr=1e-3,
                        batch=256, fit_codes=50_000, early_stopping=False, standardise=False),
    "maf_s": dict(kind="flow", flow="MAF", transforms=3, hidden=[128, 128], epochs=100, lr=2e-3,
                  batch=1024, fit_codes=50_000, patience=10, temperatures=[0.9, 0.8]),
    "nsf_s": dict(kind="flow", flow="NSF", transforms=3, hidden=[128, 128], bins=8, epochs=60, lr=2e-3,
                  batch=1024, fit_codes=50_000, patience=8, temperatures=[0.9, 0.8]),
    "nsf_m": dict(kind="flow", flow="NSF", transforms=5, hidden=[256, 256], bins=8, epochs=60, lr=1e-3,
                  batch=1024, fit_codes=50_000, patience=8, temperatures=[0.9, 0.8]),
    # a Gaussian kernel density estimate (scikit-learn KernelDensity) on whitened codes, bandwidth chosen by
    # the log-likelihood of 10 % of the fit codes held out: a training code plus h * L eps (what a mixture
    # with one component per code and covariance h^2 Sigma draws); the limit of ever more components
    "kde": dict(kind="kde", bandwidths=[0.2, 0.3, 0.4, 0.5, 0.7], fit_codes=50_000,
                temperatures=[0.8, 0.5, 0.3]),
    "gmm400": dict(kind="gmm", components=400, fit_codes=50_000, max_iter=100, reg_covar=1e-6,
                   temperatures=[0.95, 0.9]),
    "gmm200_it20": dict(kind="gmm", components=200, fit_codes=50_000, max_iter=20, reg_covar=1e-6,
                        temperatures=[0.95, 0.9]),
    # the default sampler before gmm_max_iter became 10 (gmm_components 400, all 50,000 codes)
    "gmm400_it20": dict(kind="gmm", components=400, fit_codes=50_000, max_iter=20, reg_covar=1e-6,
                        temperatures=[0.95, 0.9]),
    # today's default sampler (SamplerParams: gmm_components 400, gmm_max_iter 10, all 50,000 codes)
    "gmm400_it10": dict(kind="gmm", components=400, fit_codes=50_000, max_iter=10, reg_covar=1e-6,
                        temperatures=[0.95, 0.9]),
    "gmm400_it12": dict(kind="gmm", components=400, fit_codes=50_000, max_iter=12, reg_covar=1e-6,
                        temperatures=[0.95, 0.9]),
    "gmm800_it10": dict(kind="gmm", components=800, fit_codes=50_000, max_iter=10, reg_covar=1e-6,
                        temperatures=[0.95]),
    "gmm100_it20": dict(kind="gmm", components=100, fit_codes=50_000, max_iter=20, reg_covar=1e-6),
    # Dai & Wipf 2019: a second VAE on the codes, learned observation variance gamma
    "two_stage": dict(kind="two_stage", hidden=[256, 256], latent=None, epochs=100, lr=1e-3, batch=512,
                      fit_codes=50_000, patience=10, temperatures=[0.9, 0.8]),
}


# ---------------------------------------------------------------- densities
# Each fitter returns (sampler, info): a samplers.Sampler -- draw(n, generator, temperature) -> z (n, d) float32,
# log_density(z) -> (n,) float64 nats on the codes' scale -- and what to record of the fit (convergence, epochs).


def fit_gmm(model, z, s, seed):
    """The product's mixture: the sampler stage's own fit and evaluate's own sampler."""
    state = gmm.fit(z, s["components"], s["max_iter"], s["reg_covar"], seed)
    return gmm.Sampler(state, model.fc_mu_logvar.weight.device), {"converged": state["converged"],
                                                                   "n_iter": state["n_iter"]}


def fit_bgmm(model, z, s, seed):
    """scikit-learn's BayesianGaussianMixture; its posterior-mean parameters as a plain mixture, drawn and
    scored by gmm.Sampler like the gmm rows."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.mixture import BayesianGaussianMixture
    from threadpoolctl import threadpool_limits

    mixture = BayesianGaussianMixture(
        n_components=s["components"], covariance_type="full", max_iter=s["max_iter"], reg_covar=s["reg_covar"],
        weight_concentration_prior_type=s["weight_concentration_prior_type"],
        weight_concentration_prior=s.get("weight_concentration_prior"), random_state=seed)
    with warnings.catch_warnings(), threadpool_limits(1):
        warnings.simplefilter("ignore", ConvergenceWarning)
        mixture.fit(z.double().numpy())
    state = {"kind": gmm.KIND, "weights": torch.from_numpy(mixture.weights_ / mixture.weights_.sum()).double(),
             "means": torch.from_numpy(mixture.means_).double(),
             "scale_tril": torch.linalg.cholesky(torch.from_numpy(mixture.covariances_)).double(),
             "converged": bool(mixture.converged_), "n_iter": int(mixture.n_iter_)}
    gmm.check(state, z.shape[1])
    info = {"converged": state["converged"], "n_iter": state["n_iter"],
            "effective_components": int((mixture.weights_ > 1e-3).sum())}
    return gmm.Sampler(state, model.fc_mu_logvar.weight.device), info


class Standardiser:
    def __init__(self, z, enabled=True):
        self.mean = z.mean(0) if enabled else torch.zeros(z.shape[1], dtype=z.dtype)
        self.std = z.std(0) if enabled else torch.ones(z.shape[1], dtype=z.dtype)

    def to_u(self, z):
        return ((z.double() - self.mean) / self.std).float()

    def to_z(self, u):
        return u.double() * self.std + self.mean

    def log_det(self):  # log |du/dz|
        return -float(self.std.log().sum())


def _split(n, seed, val_frac=0.1):
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_val = int(round(n * val_frac))
    return perm[n_val:], perm[:n_val]


def _train(module, loss_fn, u, s, seed, early_stopping=True):
    """Adam on mean loss_fn(module, batch); with early stopping, 10 % of u is held out and the parameters of
    the best held-out epoch are kept (training stops after `patience` epochs without improvement)."""
    train_idx, val_idx = _split(len(u), seed) if early_stopping else (torch.arange(len(u)), None)
    g = torch.Generator().manual_seed(seed + 1)
    opt = torch.optim.Adam(module.parameters(), lr=s["lr"])
    best, best_state, best_epoch, history = math.inf, None, 0, []
    for epoch in range(1, s["epochs"] + 1):
        module.train()
        order = train_idx[torch.randperm(len(train_idx), generator=g)]
        total = 0.0
        for batch in order.split(s["batch"]):
            loss = loss_fn(module, u[batch]).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(batch)
        row = {"epoch": epoch, "train": total / len(order)}
        if early_stopping:
            module.eval()
            with torch.no_grad():
                row["val"] = float(torch.cat([loss_fn(module, u[b]) for b in val_idx.split(4096)]).mean())
            if row["val"] < best:
                best, best_epoch, best_state = row["val"], epoch, copy.deepcopy(module.state_dict())
            elif epoch - best_epoch >= s.get("patience", 10):
                history.append(row)
                break
        history.append(row)
    if best_state is not None:
        module.load_state_dict(best_state)
    module.eval()
    return {"epochs_run": len(history), "best_epoch": best_epoch if early_stopping else len(history),
            "best_val_loss": best if early_stopping else None, "last": history[-1]}


class FlowSampler:
    name = "flow"

    def __init__(self, flow, standardiser):
        self.flow, self.st = flow, standardiser

    @torch.no_grad()
    def draw(self, n, generator, temperature=1.0):
        dist = self.flow()
        eps = torch.randn(n, len(self.st.mean), generator=generator) * temperature  # the base noise, scaled
        return self.st.to_z(dist.transform.inv(eps)).float()

    @torch.no_grad()
    def log_density(self, z):
        dist = self.flow()
        return torch.cat([dist.log_prob(u).double() for u in self.st.to_u(z).split(4096)]) + self.st.log_det()


def fit_flow(model, z, s, seed):
    try:
        import zuko  # not a project dependency: only the flow rows need it
    except ImportError:
        raise SystemExit(f"{s['flow']} needs zuko: pip install zuko (or leave the flow candidates out)") from None

    torch.manual_seed(seed)
    st = Standardiser(z, s.get("standardise", True))
    u = st.to_u(z)
    kwargs = dict(transforms=s["transforms"], hidden_features=s["hidden"])
    if s["flow"] == "NSF":
        kwargs["bins"] = s["bins"]
    flow = getattr(zuko.flows, s["flow"])(u.shape[1], **kwargs)
    info = _train(flow, lambda f, b: -f().log_prob(b), u, s, seed, s.get("early_stopping", True))
    return FlowSampler(flow, st), info


class CodeVAE(nn.Module):
    """Dai & Wipf's second stage: q(v|u) = N(mu(u), diag sigma^2), p(u|v) = N(dec(v), gamma I) with a learned
    scalar gamma, p(v) = N(0, I); u the standardised first-stage code."""

    def __init__(self, d, hidden, latent):
        super().__init__()

        def mlp(n_in, n_out):
            layers, width = [], n_in
            for h in hidden:
                layers += [nn.Linear(width, h), nn.ReLU()]
                width = h
            return nn.Sequential(*layers, nn.Linear(width, n_out))

        self.latent = latent
        self.encoder, self.decoder = mlp(d, 2 * latent), mlp(latent, d)
        self.log_gamma = nn.Parameter(torch.zeros(()))

    def log_px(self, u, v):
        d = u.shape[-1]
        return -0.5 * (((u - self.decoder(v)) ** 2).sum(-1) / self.log_gamma.exp() + d * (math.log(2 * math.pi) + self.log_gamma))

    def loss(self, u):  # -ELBO per row
        mu, logvar = self.encoder(u).chunk(2, -1)
        v = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        kl = 0.5 * (mu ** 2 + logvar.exp() - 1 - logvar).sum(-1)
        return -self.log_px(u, v) + kl

    @torch.no_grad()
    def iw_log_prob(self, u, k=100):
        """Importance-weighted (K = k) lower bound on log p(u)."""
        mu, logvar = self.encoder(u).chunk(2, -1)
        std = (0.5 * logvar).exp()
        v = mu + torch.randn(k, *mu.shape) * std
        log_q = (-0.5 * (((v - mu) / std) ** 2 + logvar + math.log(2 * math.pi))).sum(-1)
        log_p = (-0.5 * (v ** 2 + math.log(2 * math.pi))).sum(-1)
        return torch.logsumexp(self.log_px(u, v) + log_p - log_q, 0) - math.log(k)


class TwoStageSampler:
    name = "two_stage"

    def __init__(self, vae2, standardiser):
        self.vae2, self.st = vae2, standardiser

    @torch.no_grad()
    def draw(self, n, generator, temperature=1.0):
        v = torch.randn(n, self.vae2.latent, generator=generator) * temperature
        return self.st.to_z(self.vae2.decoder(v)).float()  # decoded twice: here to z, then by the VAE

    @torch.no_grad()
    def log_density(self, z):
        torch.manual_seed(0)
        return torch.cat([self.vae2.iw_log_prob(u).double() for u in self.st.to_u(z).split(1000)]) + self.st.log_det()


def fit_two_stage(model, z, s, seed):
    torch.manual_seed(seed)
    st = Standardiser(z)
    u = st.to_u(z)
    vae2 = CodeVAE(u.shape[1], s["hidden"], s["latent"] or u.shape[1])
    info = _train(vae2, lambda m, b: m.loss(b), u, s, seed)
    info["gamma"] = float(vae2.log_gamma.detach().exp())
    return TwoStageSampler(vae2, st), info


class KDESampler:
    name = "kde"

    def __init__(self, kde, u, mean, chol, bandwidth):
        self.kde, self.u, self.mean, self.chol, self.h = kde, u, mean, chol, bandwidth

    def draw(self, n, generator, temperature=1.0):
        idx = torch.randint(len(self.u), (n,), generator=generator)
        eps = torch.randn(n, self.u.shape[1], generator=generator, dtype=torch.float64)
        return self.to_z(self.u[idx] + temperature * self.h * eps).float()

    def to_z(self, u):
        return self.mean + u @ self.chol.T

    def log_density(self, z):
        u = torch.linalg.solve_triangular(self.chol, (z.double() - self.mean).T, upper=False).T
        return torch.from_numpy(self.kde.score_samples(u.numpy())) - self.chol.diagonal().log().sum()


def fit_kde(model, z, s, seed):
    from sklearn.neighbors import KernelDensity

    z = z.double()
    mean = z.mean(0)
    chol = torch.linalg.cholesky(torch.cov((z - mean).T))
    u = torch.linalg.solve_triangular(chol, (z - mean).T, upper=False).T
    train_idx, val_idx = _split(len(u), seed)
    val_idx = val_idx[: s.get("val_codes", 2000)]  # enough to rank bandwidths
    scores = {}
    for h in s["bandwidths"]:
        kde = KernelDensity(bandwidth=h, rtol=s.get("rtol", 1e-4)).fit(u[train_idx].numpy())
        scores[h] = float(kde.score_samples(u[val_idx].numpy()).mean())
    best = max(scores, key=scores.get)
    kde = KernelDensity(bandwidth=best, rtol=s.get("rtol", 1e-4)).fit(u.numpy())
    return KDESampler(kde, u, mean, chol, best), {"bandwidth": best, "val_log_density_by_bandwidth": scores}


FITTERS = {"kde": fit_kde, "gmm": fit_gmm, "bgmm": fit_bgmm, "flow": fit_flow, "two_stage": fit_two_stage}


# ---------------------------------------------------------------- scoring


class Scorer:
    """quality.sample_quality's numbers (FID, precision, recall with k-NN manifolds, class coverage) against
    the test digits, with the test features and their k-NN radii computed once."""

    def __init__(self, digits, x_test_raw, p: QualityParams):
        self.digits, self.p = digits, p
        self.f_test, _ = classifier.predict(digits, classifier.scale_pixels(x_test_raw))
        self.radii_test = quality.knn_radii(self.f_test, p.k, p.block)

    def __call__(self, images):
        f, probs = classifier.predict(self.digits, images)
        precision = quality.in_manifold(f, self.f_test, self.radii_test, self.p.block).double().mean()
        radii = quality.knn_radii(f, self.p.k, self.p.block)
        recall = quality.in_manifold(self.f_test, f, radii, self.p.block).double().mean()
        coverage = quality.class_coverage(probs)
        return {"fid": quality.fid(f, self.f_test), "precision": float(precision), "recall": float(recall),
                "class_entropy": coverage["entropy"], "mean_confidence": coverage["mean_confidence"]}


class Memorisation:
    """How close draws come to the fit codes, against how close unseen codes come: nearest-neighbour distances
    to the fit codes in whitened code space (Mahalanobis under the fit codes' covariance). A sampler that
    replays training codes (a KDE with a small bandwidth) has draws far closer than held-out codes are."""

    def __init__(self, z_fit, z_held):
        self.mean = z_fit.mean(0)
        self.chol = torch.linalg.cholesky(torch.cov((z_fit - self.mean).T))
        self.fit = self.whiten(z_fit)
        self.held = self.nn(z_held)
        self.p5 = float(self.held.quantile(0.05))

    def whiten(self, z):
        return torch.linalg.solve_triangular(self.chol, (z.double() - self.mean).T, upper=False).T.float()

    def nn(self, z):
        u = self.whiten(z)
        return torch.cat([torch.cdist(b, self.fit).min(1).values for b in u.split(1000)]).double()

    def __call__(self, z):
        d = self.nn(z)
        return {"nn_dist_ratio": float(d.median() / self.held.median()),
                "frac_nearer_than_heldout_p5": float((d < self.p5).double().mean())}


@torch.no_grad()
def decode(model, z, mode):
    return to_pixel_scale(model.mean(model.decode(z.float())).cpu().float(), mode)


# ---------------------------------------------------------------- driver


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in subprocess.run(["lscpu"], capture_output=True, text=True)
                .stdout.splitlines() if line.startswith("Model name")), platform.processor())

    def version(package):
        try:
            return metadata.version(package)
        except metadata.PackageNotFoundError:
            return None  # zuko: not installed (the flow rows need it)

    return {"cpu": cpu, "cores": os.cpu_count(), "threads": torch.get_num_threads(), "torch": torch.__version__,
            "sklearn": version("scikit-learn"), "zuko": version("zuko"), "python": platform.python_version(),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def save(out: Path, results: dict) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=1) + "\n")
    tmp.replace(out)


def fmt(row: dict) -> str:
    def f(key, spec):
        v = row.get(key)
        return format(v, spec) if isinstance(v, (int, float)) else "-"
    return (f"FID {f('fid', '7.2f')}  prec {f('precision', '.3f')}  rec {f('recall', '.3f')}  "
            f"held-out {f('heldout_log_density', '8.2f')}  test {f('test_log_density', '8.2f')}  "
            f"fit {f('fit_cpu_s', '7.1f')} s CPU  nn-ratio {f('nn_dist_ratio', '.2f')}")


def table(results: dict) -> str:
    """The results as one Markdown table per model."""
    lines = []
    ref = results.get("real_training_digits")
    if ref:
        lines.append(f"real training digits: FID {ref['fid']:.1f}, precision {ref['precision']:.3f}, recall {ref['recall']:.3f}\n")
    for name, entry in results["models"].items():
        lines += [f"### {name}", "", "| candidate | FID | precision | recall | held-out log q (nats) | test log q | fit CPU s | NN ratio | notes |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for key, r in entry["candidates"].items():
            def f(k, spec):
                v = r.get(k)
                return format(v, spec) if isinstance(v, (int, float)) else ""
            info = r.get("info", {})
            notes = ", ".join(f"{k} {v}" for k, v in info.items() if k in ("n_iter", "converged", "best_epoch", "epochs_run", "effective_components"))
            if "error" in r:
                notes = r["error"]
            lines.append(f"| {key} | {f('fid', '.1f')} | {f('precision', '.3f')} | {f('recall', '.3f')} | {f('heldout_log_density', '.2f')} "
                         f"| {f('test_log_density', '.2f')} | {f('fit_cpu_s', '.0f')} | {f('nn_dist_ratio', '.2f')} | {notes} |")
        lines.append("")
    return "\n".join(lines)


def dequantize_mode(checkpoint: Path, given: str | None) -> str:
    """--dequantize, else the mode in the params.yaml beside the checkpoint, else notebook."""
    if given:
        return given
    params_file = checkpoint.parent / "params.yaml"
    params = yaml.safe_load(params_file.read_text()) if params_file.is_file() else None
    return ((params or {}).get("dequantize") or {}).get("mode", "notebook")


def settings(cname: str, quick: bool) -> dict:
    """A candidate's settings; under --quick with fewer codes, epochs and components (the same code paths)."""
    s = dict(CANDIDATES[cname])
    if quick:
        s["fit_codes"] = min(s["fit_codes"], QUICK["fit"])
        for key in ("epochs", "components"):
            if key in s:
                s[key] = min(s[key], QUICK[key])
    return s


def run_model(name, checkpoint: Path, candidates, args, scorer, results, out):
    model = load_checkpoint(checkpoint)
    mode = dequantize_mode(checkpoint, args.dequantize)
    entry = results["models"].setdefault(name, {"checkpoint": str(checkpoint), "config": model.config.model_dump(),
                                                "dequantize": mode, "candidates": {}})
    rows = entry["candidates"]
    x_train = torch.from_numpy(load_npz(args.data / "processed/train.npz", ("x",))["x"])
    x_test = torch.from_numpy(load_npz(args.data / "processed/test.npz", ("x",))["x"])
    g = torch.Generator().manual_seed
    cpu = time.process_time()
    z_all = samplers.codes(model, x_train, "mu", g(0))  # float64 (60000, d)
    entry["encode_cpu_s_60k"] = time.process_time() - cpu  # the sampler stage encodes before it fits
    n_fit, n_held = (QUICK["fit"], QUICK["held"]) if args.quick else (N_FIT, N_HELD)
    z_fit, z_held = z_all[:n_fit], z_all[N_FIT:N_FIT + n_held]
    z_test = samplers.codes(model, x_test, "mu", g(0))[:n_held if args.quick else None]
    entry["codes"] = {"fit": n_fit, "held_out": len(z_held), "test": len(z_test), "fit_on": "mu"}
    n = args.n_samples
    memo = Memorisation(z_fit, z_held)

    def record(key, row):
        rows[key] = row
        save(out, results)
        print(f"{name:8s} {key:22s} {fmt(row)}", flush=True)

    # reference rows
    if "prior" not in rows or args.force:
        prior = samplers.get(model, None, samplers.PRIOR)
        with torch.no_grad():
            z = prior.draw(n, g(args.seed))
            record("prior", {**scorer(decode(model, z, mode)), **memo(z.double().cpu()),
                             "settings": {"kind": "prior", "prior": model.config.prior},
                             "heldout_log_density": float(prior.log_density(z_held).mean()),
                             "test_log_density": float(prior.log_density(z_test).mean())})
    if "decoded_heldout_mu" not in rows or args.force:
        held_digits = f"{N_FIT:,}..{N_FIT + len(z_held) - 1:,}"
        record("decoded_heldout_mu", {**scorer(decode(model, z_held[:n], mode)),
                                      "settings": {"kind": "decoder floor",
                                                   "codes": f"mu(x) of training digits {held_digits}"}})

    for cname in candidates:
        s = settings(cname, args.quick)
        temps = [1.0] + ([t for t in s.get("temperatures", []) if t in args.temperatures] if args.temperatures else [])
        keys = [(cname if t == 1.0 else f"{cname}@T{t:g}") + args.suffix for t in temps]
        if all(k in rows for k in keys) and not args.force:
            continue
        z = z_fit[: s["fit_codes"]]
        torch.manual_seed(args.seed)
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            sampler, info = FITTERS[s["kind"]](model, z, s, args.seed)
        except Exception as exc:  # a failed fit is a result too
            record(cname, {"settings": s, "error": f"{exc.__class__.__name__}: {exc}"[:300]})
            continue
        fit_cpu, fit_wall = time.process_time() - cpu, time.perf_counter() - wall
        cpu = time.process_time()
        held = float(sampler.log_density(z_held).mean())
        test = float(sampler.log_density(z_test).mean())
        density_cpu = time.process_time() - cpu
        for key, t in zip(keys, temps):
            cpu = time.process_time()
            zs = sampler.draw(n, g(args.seed), t)
            sample_cpu = time.process_time() - cpu
            deterministic = bool(torch.equal(zs, sampler.draw(n, g(args.seed), t)))
            finite = bool(torch.isfinite(zs).all())
            row = {"settings": {**s, "temperature": t, "fit_seed": args.seed, "sample_seed": args.seed},
                   "fit_cpu_s": fit_cpu, "fit_wall_s": fit_wall, "sample_cpu_s": sample_cpu,
                   "log_density_cpu_s": density_cpu, "heldout_log_density": held, "test_log_density": test,
                   "deterministic_per_seed": deterministic, "info": info}
            if finite:
                row.update(scorer(decode(model, zs, mode)))
                row.update(memo(zs.double().cpu()))
                for extra in args.sample_seeds if t == temps[0] or args.seed_all_temps else []:
                    row.setdefault("fid_other_sample_seeds", {})[str(extra)] = scorer(
                        decode(model, sampler.draw(n, g(extra), t), mode))["fid"]
            else:
                row["error"] = "non-finite draws"
            record(key, row)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", default=[], help="name=path/to/vae.pt (repeatable)")
    parser.add_argument("--table", action="store_true", help="only print the output's results as Markdown tables")
    parser.add_argument("--candidates", nargs="+", default=list(CANDIDATES), choices=list(CANDIDATES))
    parser.add_argument("--temperatures", type=float, nargs="*", default=[0.9, 0.8],
                        help="which of a candidate's temperatures to score (none: T = 1 only)")
    parser.add_argument("--data", type=Path, default=Path("data"),
                        help="holds raw/mnist.npz and processed/{train,test}.npz")
    parser.add_argument("--classifier", type=Path, default=Path("models/classifier.pt"))
    parser.add_argument("--dequantize", default=None,
                        help="the models' dequantization (default: the params.yaml beside each checkpoint, else notebook)")
    parser.add_argument("--n-samples", type=int, default=None, help="draws per row (default 10,000; --quick: 500)")
    parser.add_argument("--seed", type=int, default=0, help="fit and sampling seed")
    parser.add_argument("--sample-seeds", type=int, nargs="*", default=[], help="extra sampling seeds (FID only)")
    parser.add_argument("--seed-all-temps", action="store_true")
    parser.add_argument("--suffix", default="", help="appended to the result keys (e.g. _seed1 with --seed 1)")
    parser.add_argument("--force", action="store_true", help="rerun candidates already in the output")
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: 2,000 fit codes, 500 held-out and test codes, 500 draws, at most 2 epochs "
                             "and 10 components (default output: a scratch file in the temp folder)")
    parser.add_argument("-o", "--output", type=Path, default=None,
                        help="default: benchmarks/results/sampler_candidates.json")
    parser.add_argument("--set", action="append", default=[], help="candidate.key=value (JSON) override")
    args = parser.parse_args()
    for kv in args.set:
        key, value = kv.split("=", 1)
        cname, field = key.split(".", 1)
        CANDIDATES[cname][field] = json.loads(value)
    if args.output is None:
        args.output = (Path(tempfile.gettempdir()) / "sampler_candidates_quick.json" if args.quick
                       else Path("benchmarks/results/sampler_candidates.json"))
    if args.n_samples is None:
        args.n_samples = QUICK["n_samples"] if args.quick else 10_000

    results = json.loads(args.output.read_text()) if args.output.exists() else {}
    results.setdefault("models", {})
    if args.table:
        print(table(results))
        return
    import sklearn.mixture  # noqa: F401  (before the clocks start: a fit's time is the fit's own, as in samplers.fit)
    import sklearn.neighbors  # noqa: F401

    n_fit, n_held = (QUICK["fit"], QUICK["held"]) if args.quick else (N_FIT, N_HELD)
    results["machine"] = machine()
    results["protocol"] = {"codes": "encoder means mu(x)",
                           "fit_codes": f"training digits 0..{n_fit - 1} (or the first fit_codes)",
                           "held_out_codes": f"training digits {N_FIT}..{N_FIT + n_held - 1}",
                           "n_samples": args.n_samples, "k": 3,
                           "against": "the 10,000 test digits, classifier features",
                           "cpu_time": "time.process_time, 1 thread",
                           **({"quick": "smoke test: small sizes, the numbers mean nothing"} if args.quick else {})}
    p = QualityParams(n_samples=args.n_samples, n_reference=args.n_samples if args.quick else 10_000)
    digits = classifier.load(args.classifier)
    raw = load_npz(args.data / "raw/mnist.npz", ("x_train", "x_test"))
    scorer = Scorer(digits, raw["x_test"], p)
    if "real_training_digits" not in results:
        results["real_training_digits"] = quality.reference(digits, raw["x_train"], scorer.f_test, p)
        save(args.output, results)
    print("real training digits:", fmt(results["real_training_digits"]), flush=True)
    for spec in args.model:
        name, path = spec.split("=", 1)
        run_model(name, Path(path), args.candidates, args, scorer, results, args.output)
    print(table(results))


if __name__ == "__main__":
    main()

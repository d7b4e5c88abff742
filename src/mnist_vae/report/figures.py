"""The notebook's figures, and a few more, from a trained VAE: pure functions that return a Figure.

Every function takes the model (in eval mode), numpy or torch data and, where it draws anything at
random, a ``torch.Generator``; it returns a ``matplotlib.figure.Figure`` and writes nothing (canvas.save
writes one). Figures are made with the Agg canvas directly, not through pyplot (canvas.py), so importing
this module changes no global backend and no figure is ever registered with pyplot.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from mnist_vae.data.geometry import PIXELS, SIDE
from mnist_vae.report.canvas import DPI, centres, figure, grid_figure, labelled_grid, show, tile
from mnist_vae.vae import samplers
from mnist_vae.vae.latents import linear_path

GAP = 8  # pixels of white between the interpolation path and its original digits
CURVES = (("total", "Total: negative ELBO"), ("rec", "Reconstruction: -log p(x|z)"), ("kl", "KL(q(z|x) || p(z))"))
# under train.objective iwae the history also holds the bound being minimised, drawn in a panel of its own
IWAE_CURVE = ("neg_iwae_bound", "Negative IWAE bound (the iwae loss)")


# ---------------------------------------------------------------- helpers


def _tensor(x, model) -> torch.Tensor:
    """Data as float32 rows of 784 pixels on the model's device."""
    x = torch.as_tensor(np.asarray(x) if not torch.is_tensor(x) else x, dtype=torch.float32)
    return x.reshape(len(x), PIXELS).to(next(model.parameters()).device)


def _images(model, z: torch.Tensor) -> torch.Tensor:
    """Decoder means E[x|z] for z (..., d) as (..., 784) CPU tensors in [0, 1] (decoded as rows: the conv
    decoder takes (n, d) only)."""
    images = model.mean(model.decode(z.reshape(-1, z.shape[-1]))).cpu()
    return images.reshape(*z.shape[:-1], images.shape[-1])


def _check_count(name: str, n: int, minimum: int = 1) -> None:
    if n < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {n}")


# ---------------------------------------------------------------- figures


def _sampler_title(model, sampler: samplers.Sampler, temperature: float = 1.0) -> str:
    if sampler.name == samplers.PRIOR:
        return f"the prior {prior_name(model)}"
    return f"the fitted sampler '{sampler.name}'" + (f", T = {temperature:g}" if temperature != 1.0 else "")


@torch.no_grad()
def sampled(model, sampler: samplers.Sampler, n: int, generator: torch.Generator, temperature: float = 1.0) -> torch.Tensor:
    """n x n decoder means of z drawn from `sampler` (samplers.get) at `temperature`, as (n, n, 784) CPU tensors."""
    _check_count("n", n)
    return _images(model, sampler.draw(n * n, generator, temperature)).reshape(n, n, -1)


def samples_grid(model, sampler: samplers.Sampler, n: int, generator: torch.Generator, temperature: float = 1.0) -> Figure:
    """n x n decoder means of z drawn from `sampler` (the notebook's generate_images_vae for the prior)."""
    fig, ax = grid_figure(tile(sampled(model, sampler, n, generator, temperature)), 0.3, 0.6, min_w=3.6, max_w=10.0)
    ax.set_title(f"Samples from {_sampler_title(model, sampler, temperature)}")
    return fig


def samplers_side_by_side(model, chosen: list[tuple[samplers.Sampler, float]], n: int, seed: int) -> Figure:
    """n x n samples of each (sampler, temperature) in `chosen` side by side, each drawn from a generator seeded
    with `seed`."""
    grids = [tile(sampled(model, sampler, n, torch.Generator().manual_seed(seed), t)) for sampler, t in chosen]
    h, w = grids[0].shape
    inch = min(2.0 / DPI, 7.0 / w)
    fig = figure(len(grids) * (w * inch + 0.3), h * inch + 0.7)
    for k, (grid, (sampler, t)) in enumerate(zip(grids, chosen)):
        ax = fig.add_subplot(1, len(grids), k + 1)
        show(ax, grid)
        ax.set_title(_sampler_title(model, sampler, t), fontsize=10)
    fig.suptitle(f"{n * n} samples of each, seed {seed}")
    return fig


def prior_name(model) -> str:
    """The model's prior as a figure title says it."""
    if model.config.prior == "vamp":
        return f"z ~ VampPrior (K = {model.config.vamp_components})"
    return "z ~ N(0, I)"


@torch.no_grad()
def pseudo_inputs(model, columns: int = 25, max_images: int = 500) -> Figure:
    """The VampPrior's learned pseudo-inputs u_k (the first `max_images`), as images in [0, 1]
    (Tomczak & Welling 2018, their figure of pseudo-inputs)."""
    _check_count("columns", columns)
    u = model.pseudo_input_images().cpu()[:max_images]
    rows = math.ceil(len(u) / columns)
    images = np.full((rows * columns, u.shape[1]), np.nan, np.float32)
    images[:len(u)] = u.numpy()
    fig, ax = grid_figure(tile(images.reshape(rows, columns, -1)), 0.3, 0.6, min_w=3.6)
    ax.set_title(f"The VampPrior's pseudo-inputs ({len(u)} of {model.config.vamp_components})")
    return fig


@dataclass
class Interpolations:
    """What :func:`interpolations` draws; all CPU tensors of 784-pixel images."""

    prior: torch.Tensor  # (ceil(rows/2), steps, 784): paths between two prior draws
    data: torch.Tensor  # (rows - ceil(rows/2), steps, 784): paths between two test digits' encoder means
    pairs: torch.Tensor  # (rows - ceil(rows/2), 2): the test digits' indices (start, end)
    originals: torch.Tensor  # (rows - ceil(rows/2), 2, 784): those test digits


@torch.no_grad()
def interpolation_paths(model, x_test, rows: int, steps: int, generator: torch.Generator) -> Interpolations:
    """Decoded latent paths: ceil(rows/2) between z1, z2 ~ p(z) (the model's prior), the rest between mu(x_a) and mu(x_b).

    Randomness, in order: z1 (n_prior x d), z2 (n_prior x d), then a permutation picking the test digits.
    """
    _check_count("rows", rows)
    n_prior, n_data = math.ceil(rows / 2), rows - math.ceil(rows / 2)
    z1, z2 = (model.sample_prior(n_prior, generator) for _ in range(2))
    if n_data * 2 > len(x_test):
        raise ValueError(f"{rows} interpolation rows need {2 * n_data} test digits, got {len(x_test)}")
    pairs = torch.randperm(len(x_test), generator=generator)[:2 * n_data].reshape(n_data, 2)
    x = _tensor(x_test[pairs.flatten().numpy()], model)
    mu = model.encode(x)[0].reshape(n_data, 2, model.latent_dim)
    return Interpolations(
        prior=_images(model, linear_path(z1, z2, steps)),
        data=_images(model, linear_path(mu[:, 0], mu[:, 1], steps)),
        pairs=pairs,
        originals=x.cpu().reshape(n_data, 2, x.shape[-1]),
    )


def interpolations(model, x_test, rows: int, steps: int, generator: torch.Generator) -> Figure:
    """`rows` rows of `steps` decoded images along straight latent paths (see :func:`interpolation_paths`).

    Test-digit rows show their two original digits in extra columns at the left and right ends.
    """
    paths = interpolation_paths(model, x_test, rows, steps, generator)
    n_prior, n_data = len(paths.prior), len(paths.data)
    path = tile(torch.cat([paths.prior, paths.data]))
    if n_data:  # original digits on either side; blank (NaN) next to the prior rows
        blank = torch.full((n_prior, 2, paths.originals.shape[-1]), float("nan"))
        ends = torch.cat([blank, paths.originals])
        gap = np.ones((path.shape[0], GAP), dtype=np.float32)
        path = np.hstack([tile(ends[:, :1]), gap, path, gap, tile(ends[:, 1:])])
    fig, ax = grid_figure(path, 1.2, 1.0, min_w=4.5)
    offset = SIDE + GAP if n_data else 0
    top = ax.secondary_xaxis("top")
    top.set_xticks(centres(steps, offset), [f"α={a:.2f}" for a in np.linspace(0, 1, steps)], fontsize=8)
    top.tick_params(length=0)
    for spine in top.spines.values():
        spine.set_visible(False)
    if n_data:
        ax.set_xticks([(SIDE - 1) / 2, path.shape[1] - (SIDE + 1) / 2], ["original", "original"], fontsize=8)
        ax.tick_params(axis="x", length=0)
    ax.set_yticks(centres(rows), ["prior"] * n_prior + ["test digits"] * n_data, fontsize=9)
    ax.tick_params(axis="y", length=0)
    ax.set_title("Linear interpolation z₁ → z₂ in latent space", fontsize=10)
    return fig


@torch.no_grad()
def reconstructions(model, x_test, n: int) -> Figure:
    """The first n test digits above their reconstructions, decoded from the encoder mean."""
    _check_count("n", n)
    x = _tensor(x_test[:n], model)
    recon = _images(model, model.encode(x)[0])
    fig, ax = grid_figure(tile(torch.stack([x.cpu(), recon])), 1.3, 0.7, min_w=4.8)
    ax.set_yticks(centres(2), ["original", "reconstruction"], fontsize=9)
    ax.tick_params(axis="y", length=0)
    ax.set_title("Test digits and their reconstructions E[x | z = μ(x)]", fontsize=10)
    return fig


def training_curves(history: list[dict]) -> Figure:
    """Train and test negative ELBO, reconstruction and KL terms per epoch (nats per example), and the
    train and test negative IWAE bound when the history has it (train.objective iwae): each panel
    draws one quantity on both splits.

    `history` rows are training.train's; numeric strings (rows of csv.DictReader) work too.
    """
    epochs = [float(row["epoch"]) for row in history]
    marker = "o" if len(history) <= 30 else None
    curves = CURVES + ((IWAE_CURVE,) if f"train_{IWAE_CURVE[0]}" in history[0] else ())
    fig = figure(13.0 * len(curves) / 3, 3.8)
    for k, (key, title) in enumerate(curves):
        ax = fig.add_subplot(1, len(curves), k + 1)
        for split in ("train", "test"):
            values = [float(row[f"{split}_{key}"]) for row in history]
            ax.plot(epochs, values, marker=marker, markersize=3, label=split)
        ax.set(title=title, xlabel="epoch", ylabel="nats per example")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle("Training curves")
    return fig


@torch.no_grad()
def reparameterization(model, x_test, generator: torch.Generator, n: int = 1000) -> Figure:
    """The notebook's histograms of the reparameterization trick, from the trained encoder on n test digits.

    Randomness, in order: the prior samples (len(mu) draws of model.sample_prior), then eps.
    """
    _check_count("n", n)
    mu, logvar = (t.cpu() for t in model.encode(_tensor(x_test[:n], model)))
    prior = model.sample_prior(len(mu), generator).cpu().flatten()  # as many values as mu has entries
    sigma = torch.exp(0.5 * logvar)
    z = mu + sigma * torch.randn(mu.shape, generator=generator)
    prior_title = "Prior p(z) ~ N(0,1)" if model.config.prior == "standard" else "Prior p(z): VampPrior"
    panels = [(prior, "blue", prior_title, "z"), (mu, "orange", "Encoder Mean μ", "μ"),
              (sigma, "green", "Encoder Std σ", "σ"), (z, "red", "Samples z = μ + σε", "z")]
    fig = figure(15.0, 4.0)
    for k, (values, color, title, xlabel) in enumerate(panels):
        ax = fig.add_subplot(1, 4, k + 1)
        ax.hist(values.flatten().numpy(), bins=50, alpha=0.7, color=color)
        ax.set(title=title, xlabel=xlabel, ylabel="Frequency")
    fig.suptitle(f"Reparameterization on {len(mu)} test digits (all {mu.shape[1]} latent dimensions pooled)")
    return fig


@dataclass
class LatentPlane:
    """A plane through the latent space: z = origin + a * axes[0] + b * axes[1]."""

    origin: np.ndarray  # (d,)
    axes: np.ndarray  # (2, d), orthonormal rows (the second is zero for a 1-D latent)
    labels: tuple[str, str]  # what a and b are

    def coordinates(self, z: np.ndarray) -> np.ndarray:
        """(n, d) latent vectors -> their (n, 2) coordinates (a, b) on the plane."""
        return (z - self.origin) @ self.axes.T


def latent_plane(mu: np.ndarray) -> LatentPlane:
    """The plane the encoder means are shown on: the latent itself when it is 2-D, else their first two
    principal directions through their mean (signs fixed so the largest loading is positive)."""
    d = mu.shape[1]
    if d <= 2:
        axes = np.eye(2, d)
        return LatentPlane(np.zeros(d), axes, ("z1", "z2") if d == 2 else ("z1", "(1-D latent)"))
    origin = mu.mean(0)
    _, s, vt = np.linalg.svd(mu - origin, full_matrices=False)
    vt = vt[:2] * np.sign(vt[:2][np.arange(2), np.abs(vt[:2]).argmax(1)])[:, None]
    share = s**2 / max((s**2).sum(), 1e-300)
    return LatentPlane(origin, vt, (f"PC 1 ({share[0]:.0%} var)", f"PC 2 ({share[1]:.0%} var)"))


def _project(mu: np.ndarray) -> tuple[np.ndarray, str, str]:
    """2-D coordinates of the encoder means on :func:`latent_plane`, and their axis labels."""
    plane = latent_plane(mu)
    return plane.coordinates(mu), *plane.labels


@torch.no_grad()
def latent_space(model, x_test, y_test, n_points: int) -> Figure:
    """Encoder means of the first n_points test digits, coloured by label (PCA when latent_dim != 2)."""
    _check_count("n_points", n_points)
    mu = model.encode(_tensor(x_test[:n_points], model))[0].cpu().double().numpy()
    xy, xlabel, ylabel = _project(mu)
    fig = figure(7.0, 6.0)
    ax = fig.add_subplot()
    points = ax.scatter(xy[:, 0], xy[:, 1], c=np.asarray(y_test)[:n_points], cmap="tab10", vmin=-0.5, vmax=9.5,
                        s=4, alpha=0.7, linewidths=0)
    fig.colorbar(points, ax=ax, ticks=range(10), label="digit")
    how = "" if mu.shape[1] <= 2 else f", first two principal components of the {mu.shape[1]}-D latent"
    ax.set(title=f"Encoder means μ(x) of {len(mu)} test digits{how}", xlabel=xlabel, ylabel=ylabel)
    ax.title.set_fontsize(10)
    return fig


@torch.no_grad()
def manifold(model, grid: int, span: float = 3.0) -> Figure:
    """Decoder means over a grid x grid lattice of z filling [-span, span]^2 (cell centres), for a 2-D latent.

    z1 grows to the right and z2 upwards; the axes are in latent units.
    """
    if model.latent_dim != 2:
        raise ValueError(f"the manifold figure needs latent_dim 2, this model has {model.latent_dim}")
    _check_count("grid", grid)
    ticks = span * ((2 * torch.arange(grid) + 1) / grid - 1)  # cell centres of a uniform partition
    z2, z1 = torch.meshgrid(ticks.flip(0), ticks, indexing="ij")  # top row: largest z2
    z = torch.stack([z1, z2], -1).to(next(model.parameters()).device)
    fig = figure(6.4, 6.6)
    ax = fig.add_subplot()
    show(ax, tile(_images(model, z), pad=0), bare=False, extent=(-span, span, -span, span))
    ax.locator_params(nbins=7)
    ax.set(xlabel="z1", ylabel="z2")
    ax.set_title(f"Decoder means E[x|z], z on a uniform {grid}×{grid} grid over [-{span:g}, {span:g}]²", fontsize=11)
    return fig


def class_rows(images, predicted, per_class: int, n_classes: int = 10) -> np.ndarray:
    """(n_classes, per_class, 784) images: row d holds the first `per_class` images predicted as digit d,
    in their given order; a row with fewer is padded with NaN (drawn blank)."""
    images = np.asarray(images, dtype=np.float32).reshape(len(images), -1)
    predicted = np.asarray(predicted)
    out = np.full((n_classes, per_class, images.shape[1]), np.nan, dtype=np.float32)
    for d in range(n_classes):
        picked = images[predicted == d][:per_class]
        out[d, :len(picked)] = picked
    return out


def samples_by_class(images, predicted, per_class: int) -> Figure:
    """Prior samples sorted by the classifier's predicted digit: one row per digit, blank where the model
    drew fewer than `per_class` of that digit."""
    _check_count("per_class", per_class)
    predicted = np.asarray(predicted)
    share = np.bincount(predicted, minlength=10)[:10] / max(len(predicted), 1)
    return labelled_grid(tile(class_rows(images, predicted, per_class)),
                         [f"{d} ({share[d]:.0%})" for d in range(10)],
                         f"Prior samples by predicted digit (share of {len(predicted)} samples)")


def class_histogram(histogram, entropy: float, n: int) -> Figure:
    """Bar chart of the fraction of samples predicted as each digit, against the uniform 1/10."""
    hist = np.asarray(histogram, dtype=np.float64)
    fig = figure(6.0, 3.6)
    ax = fig.add_subplot()
    ax.bar(range(len(hist)), hist, color="tab:blue")
    ax.axhline(1 / len(hist), color="black", linestyle="--", linewidth=1, label="uniform")
    ax.set_xticks(range(len(hist)))
    ax.set(xlabel="predicted digit", ylabel="fraction of samples")
    ax.set_title(f"Classes of {n} prior samples (entropy {entropy:.3f} nats, max ln 10 = {math.log(10):.3f})",
                 fontsize=10)
    ax.legend()
    return fig



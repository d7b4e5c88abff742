"""render: the trained model's figures (and its fitted samplers', at sampler.temperature) -> reports/figures/*.png,
the training's frames -> reports/progress/*.png, and the latent explorer, whose draw button draws from the best
sampler (models/best_sampler.json) -> reports/explorer.html."""

import contextlib
import shutil
import tempfile
from pathlib import Path

import torch

from mnist_vae.files import load_history, load_npz
from mnist_vae.pipeline.stage import run_stage
from mnist_vae.report import canvas, explorer, figures, progress
from mnist_vae.scoring import classifier, quality
from mnist_vae.vae import samplers
from mnist_vae.vae.model import load_checkpoint
from mnist_vae.vae.samplers import choice

TEST, HISTORY = Path("data/processed/test.npz"), Path("metrics/history.csv")
FRAMES, PROGRESS = Path("reports/frames.npz"), Path("reports/progress")
CLASSIFIER = Path("models/classifier.pt")
MODEL, OUT = Path("models/vae.pt"), Path("reports/figures")
SAMPLER, CHOICE = Path("models/sampler.pt"), Path("models/best_sampler.json")
EXPLORER = Path("reports/explorer.html")


def main(params):
    model = load_checkpoint(MODEL)
    fitted = samplers.load(SAMPLER, MODEL)
    test = load_npz(TEST, ("x", "y"))
    frames = load_npz(FRAMES, ("epochs", "samples", "reconstructions", "originals"))
    with folder(OUT) as tmp:
        for name, fig in wanted(params, model, fitted, torch.from_numpy(test["x"]), test["y"]):
            canvas.save(fig, tmp / f"{name}.png")
    with folder(PROGRESS) as tmp:
        progress.write(tmp, frames, params.render.progress_every)
    print(f"render: {len(list(OUT.glob('*.png')))} figures in {OUT}/, {len(list(PROGRESS.glob('*.png')))} frames "
          f"of the training in {PROGRESS}/")
    if params.render.explorer:
        best = choice.load(CHOICE, MODEL, SAMPLER, samplers.available(fitted))
        explorer.write(EXPLORER, model, fitted, torch.from_numpy(test["x"]), test["y"], params.seed,
                       params.evaluate.active_unit_threshold, best)
        print(f"render: the latent explorer in {EXPLORER} ({EXPLORER.stat().st_size / 1e6:.1f} MB)")
    else:
        explorer.write_off_notice(EXPLORER)


@contextlib.contextmanager
def folder(out: Path):
    """A temporary folder beside `out`, renamed over it when the block ends well (else removed)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        yield tmp
        shutil.rmtree(out, ignore_errors=True)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def wanted(params, model, fitted, x, y):
    """(name, figure) for each figure the render params ask for; each random figure has its own stream."""
    p, seed, t = params.render, params.seed, params.sampler.temperature

    def gen():
        return torch.Generator().manual_seed(seed)

    prior = samplers.get(model, fitted, samplers.PRIOR)
    if p.samples_grid:
        yield "samples", figures.samples_grid(model, prior, p.samples_grid, gen())
        for name in fitted.names:  # each fitted sampler's grid, and beside the prior's on the same seed
            sampler = samplers.get(model, fitted, name)
            yield f"samples_{name}", figures.samples_grid(model, sampler, p.samples_grid, gen(), t)
            yield f"samples_prior_vs_{name}", figures.samplers_side_by_side(model, [(prior, 1.0), (sampler, t)],
                                                                           p.samples_grid, seed)
    if model.config.prior == "vamp":
        yield "pseudo_inputs", figures.pseudo_inputs(model)
    if p.interpolation_rows:
        yield "interpolation", figures.interpolations(model, x, p.interpolation_rows, p.interpolation_steps, gen())
    if p.reconstructions:
        yield "reconstructions", figures.reconstructions(model, x, p.reconstructions)
    if p.curves:
        yield "training_curves", figures.training_curves(load_history(HISTORY))
    if p.histograms:
        yield "reparameterization", figures.reparameterization(model, x, gen())
    if p.latent_points:
        yield "latent_space", figures.latent_space(model, x, y, p.latent_points)
    if p.manifold_grid and model.latent_dim == 2:
        yield "manifold", figures.manifold(model, p.manifold_grid)
    if p.class_sheet or p.class_histogram:
        yield from _class_figures(params, model, prior, gen())


def _class_figures(params, model, prior, generator):
    """The prior samples of evaluate's quality metrics (same seed, count and mapping), classified."""
    n = params.quality.n_samples
    images = quality.generate(model, prior, n, params.dequantize.mode, generator)
    _, probs = classifier.predict(classifier.load(CLASSIFIER), images)
    predicted = probs.argmax(1).numpy()
    if params.render.class_sheet:
        yield "samples_by_class", figures.samples_by_class(images, predicted, params.render.class_sheet)
    if params.render.class_histogram:
        coverage = quality.class_coverage(probs)
        yield "class_histogram", figures.class_histogram(coverage["histogram"], coverage["entropy"], n)


if __name__ == "__main__":
    run_stage("render", main)

"""render: the trained model's figures -> reports/figures/*.png, added to the MLflow run."""

import csv
import shutil
import tempfile
from pathlib import Path

import torch

from mnist_vae import figures
from mnist_vae.cli import run_stage
from mnist_vae.io import load_npz
from mnist_vae.model import load_checkpoint
from mnist_vae.params import flatten
from mnist_vae.tracking import resume_run

TEST, HISTORY = Path("data/processed/test.npz"), Path("metrics/history.csv")
MODEL, RUN, OUT = Path("models/vae.pt"), Path("models/mlflow_run.json"), Path("reports/figures")


def main(params):
    p = params.render
    model = load_checkpoint(MODEL)
    test = load_npz(TEST, ("x", "y"), "dequantize")
    x, y = torch.from_numpy(test["x"]), test["y"]
    gen = lambda: torch.Generator().manual_seed(params.seed)  # noqa: E731  each figure its own stream
    wanted = {
        "samples": p.samples_grid and (lambda: figures.samples_grid(model, p.samples_grid, gen())),
        "interpolation": p.interpolation_rows and (
            lambda: figures.interpolations(model, x, p.interpolation_rows, p.interpolation_steps, gen())),
        "reconstructions": p.reconstructions and (lambda: figures.reconstructions(model, x, p.reconstructions)),
        "training_curves": p.curves and (lambda: figures.training_curves(_history())),
        "reparameterization": p.histograms and (lambda: figures.reparameterization(model, x, gen())),
        "latent_space": p.latent_points and (lambda: figures.latent_space(model, x, y, p.latent_points)),
        "manifold": p.manifold_grid and model.latent_dim == 2 and (lambda: figures.manifold(model, p.manifold_grid)),
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".figures.", dir=OUT.parent))
    try:
        with resume_run(RUN, {k: v for k, v in flatten(params).items() if k.startswith("render.")}) as mlflow:
            for name, make in wanted.items():
                if make:
                    figures.save(make(), tmp / f"{name}.png")
            shutil.rmtree(OUT, ignore_errors=True)
            tmp.rename(OUT)
            mlflow.log_artifacts(str(OUT), artifact_path="figures")
        print(f"render: {len(list(OUT.glob('*.png')))} figures in {OUT}/")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _history():
    with open(HISTORY, newline="") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


if __name__ == "__main__":
    run_stage("render", main)

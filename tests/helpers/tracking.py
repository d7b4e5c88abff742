"""A small pipeline result on disk, as the stages write it, and the fixtures that point tracking at a fresh
embedded MLflow store in a test's folder."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from helpers.digits import FIXTURE_DIGITS
from helpers.pipeline import BIN, REPO
from mnist_vae.files import load_npz, save_npz, sha256_file
from mnist_vae.params import Params, SamplerParams
from mnist_vae.pipeline import tracking
from mnist_vae.report import progress
from mnist_vae.report.canvas import save_grid
from mnist_vae.vae import samplers
from mnist_vae.vae.model import VAE, load_checkpoint, save_checkpoint
from mnist_vae.vae.samplers import choice

HISTORY = [
    {"epoch": 1, "train_total": 200.0, "train_rec": 190.0, "train_kl": 10.0, "epoch_time": 2.0, "time": 1_700_000_002.5},
    {"epoch": 2, "train_total": 150.0, "train_rec": 138.0, "train_kl": 12.0, "epoch_time": 2.0, "time": 1_700_000_004.5},
]


def write_result(root: Path, params: Params | None = None, seed: int = 0) -> tracking.Result:
    """The files the pipeline's stages write, small: a tiny model, two epochs, one metric file, the
    headline, two figures and the training's frames (real PNG files, write_pictures), and a training and a
    test set of a few digits. `seed` makes the model and its pictures others."""
    params = params or Params(model={"hidden_dims": [8], "latent_dim": 2}, tracking={"registered_model": "tiny-vae"})
    torch.manual_seed(seed)
    model = VAE(params.model)
    save_checkpoint(root / "models/vae.pt", model, {"device": "cpu", "torch_version": "2.13.0"})
    (root / "metrics").mkdir(parents=True, exist_ok=True)
    with open(root / "metrics/history.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(HISTORY[0]))
        writer.writeheader()
        writer.writerows(HISTORY)
    (root / "metrics/eval.json").write_text(json.dumps(
        {"test": {"nelbo": 101.5, "iw_nll": 99.25}, "likelihood": {"normalised": False, "note": "text"},
         "posterior": {"active_units": 2, "kl_per_dim": [1.0, 2.0]}}))
    (root / "metrics/headline.json").write_text(json.dumps({"test_nll_iwae": 99.25, "sample_fid": 12.5}))
    write_pictures(root, seed)
    digits = np.random.default_rng(0)
    for split, n in (("train", 12), ("test", 5)):
        save_npz(root / f"data/processed/{split}.npz", {"x": digits.random((n, 784), dtype=np.float32),
                                                        "y": digits.integers(0, 10, n).astype(np.uint8)})
    return tracking.Result(
        params=params, history=root / "metrics/history.csv", metrics={"eval": root / "metrics/eval.json"},
        artifacts={root / "metrics/eval.json": "", root / "reports/figures": "figures",
                   root / "reports/progress": "progress", root / "models/vae.pt": "checkpoint"},
        checkpoint=root / "models/vae.pt", headline=root / "metrics/headline.json",
        datasets={"training": root / "data/processed/train.npz", "testing": root / "data/processed/test.npz"},
        images=[root / "reports/figures", root / "reports/progress"],
    )


def write_pictures(root: Path, seed: int) -> None:
    """reports/figures/samples.png and reconstructions.png, and reports/progress/ (a frame before the first
    epoch and after each of two, noise turning into digits), drawn from real test digits picked by `seed`
    (each seed's pictures differ; a screenshot of them shows digits)."""
    rng = np.random.default_rng(seed)
    with np.load(FIXTURE_DIGITS) as f:
        real = f["x_test"].reshape(-1, 784)

    def digits(n: int) -> np.ndarray:
        return real[rng.choice(len(real), n, replace=False)] / 255.0

    save_grid(root / "reports/figures/samples.png", digits(100).reshape(10, 10, 784))
    originals = digits(10)
    save_grid(root / "reports/figures/reconstructions.png", np.stack([originals, originals]))
    noise, ink = rng.random((64, 784)), digits(64)
    frames = {"epochs": np.arange(3), "samples": np.uint8(255 * np.stack([(1 - t) * noise + t * ink for t in (0, .6, 1)])),
              "reconstructions": np.uint8(255 * np.stack([(1 - t) * noise[:10] + t * originals for t in (0, .6, 1)])),
              "originals": np.uint8(255 * originals)}
    progress.write(root / "reports/progress", frames, 1)


@pytest.fixture
def root(tmp_path, monkeypatch):
    """tmp_path as the repository root as far as tracking is concerned (its store: tmp_path/mlflow.db)."""
    import mlflow

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("DVC_EXP_NAME", raising=False)
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    monkeypatch.chdir(tmp_path)  # where MLflow puts the artifacts of an experiment made without a location
    yield tmp_path
    mlflow.set_tracking_uri(None)


@pytest.fixture
def store(root):
    """A fresh embedded store under tmp_path."""
    import mlflow

    return mlflow.MlflowClient(f"sqlite:///{root / 'mlflow.db'}")


def write_track_inputs(root: Path, params: Params | None = None, seed: int = 0) -> tracking.Result:
    """Every file the track stage reads, small (write_result's, and params.yaml, the training's and the
    classifier's summaries, a fitted sampler and the choice of the best sampler, an explorer page, a
    .gitignore for a git checkout)."""
    result = write_result(root, params, seed)
    (root / "params.yaml").write_text(yaml.safe_dump(result.params.model_dump(), sort_keys=False))
    (root / "metrics/train.json").write_text(json.dumps({"total_time": 4.0}))
    (root / "metrics/classifier.json").write_text(json.dumps({"test_accuracy": 0.97}))
    model = load_checkpoint(root / "models/vae.pt")  # and its fitted sampler, as the sampler stage writes it
    x = torch.from_numpy(load_npz(root / "data/processed/train.npz", ("x",))["x"])
    state, summary = samplers.fit(model, x, SamplerParams(gmm_components=2, held_out=10), 0)
    samplers.save(root / "models/sampler.pt", state, sha256_file(root / "models/vae.pt"))
    (root / "metrics/sampler.json").write_text(json.dumps(summary))
    choice.record(root / "models/best_sampler.json", {"prior": 300.0, "gmm": 90.0}, {"prior": 1.0, "gmm": 1.0},
                  root / "models/vae.pt", root / "models/sampler.pt")
    (root / "reports/explorer.html").write_text("<!doctype html><title>explorer</title>\n")
    (root / ".gitignore").write_text("/mlflow.db*\n/mlartifacts/\n/models/\n/data/\n")
    return result


def run_track(root: Path) -> list[str]:
    """`python stages/track.py` in `root` (as by hand: the working directory is the root); the lines it printed."""
    environment = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    environment.pop("DVC_ROOT", None)
    proc = subprocess.run([sys.executable, str(REPO / "stages/track.py")], cwd=root, env=environment,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.splitlines()


def git(root: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=root, check=True,
                          capture_output=True, text=True).stdout.strip()

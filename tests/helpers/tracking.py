"""A small pipeline result on disk, as the stages write it, and the fixtures that point tracking at a fresh
embedded MLflow store in a test's folder."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mnist_vae.files import save_npz
from mnist_vae.params import Params
from mnist_vae.pipeline import tracking
from mnist_vae.vae.model import VAE, save_checkpoint

HISTORY = [
    {"epoch": 1, "train_total": 200.0, "train_rec": 190.0, "train_kl": 10.0, "epoch_time": 2.0, "time": 1_700_000_002.5},
    {"epoch": 2, "train_total": 150.0, "train_rec": 138.0, "train_kl": 12.0, "epoch_time": 2.0, "time": 1_700_000_004.5},
]


def write_result(root: Path, params: Params | None = None) -> tracking.Result:
    """The files the pipeline's stages write, small: a tiny model, two epochs, one metric file, the
    headline, a figure, and a training and a test set of a few digits."""
    params = params or Params(model={"hidden_dims": [8], "latent_dim": 2}, tracking={"registered_model": "tiny-vae"})
    torch.manual_seed(0)
    save_checkpoint(root / "models/vae.pt", VAE(params.model), {"device": "cpu", "torch_version": "2.13.0"})
    (root / "metrics").mkdir(parents=True, exist_ok=True)
    with open(root / "metrics/history.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(HISTORY[0]))
        writer.writeheader()
        writer.writerows(HISTORY)
    (root / "metrics/eval.json").write_text(json.dumps(
        {"test": {"nelbo": 101.5, "iw_nll": 99.25}, "likelihood": {"normalised": False, "note": "text"},
         "posterior": {"active_units": 2, "kl_per_dim": [1.0, 2.0]}}))
    (root / "metrics/headline.json").write_text(json.dumps({"test_nll_iwae": 99.25, "sample_fid": 12.5}))
    (root / "reports/figures").mkdir(parents=True, exist_ok=True)
    (root / "reports/figures/samples.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    digits = np.random.default_rng(0)
    for split, n in (("train", 12), ("test", 5)):
        save_npz(root / f"data/processed/{split}.npz", {"x": digits.random((n, 784), dtype=np.float32),
                                                        "y": digits.integers(0, 10, n).astype(np.uint8)})
    return tracking.Result(
        params=params, history=root / "metrics/history.csv", metrics={"eval": root / "metrics/eval.json"},
        artifacts={root / "metrics/eval.json": "", root / "reports/figures": "figures",
                   root / "models/vae.pt": "checkpoint"},
        checkpoint=root / "models/vae.pt", headline=root / "metrics/headline.json",
        datasets={"training": root / "data/processed/train.npz", "testing": root / "data/processed/test.npz"},
    )


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

"""train: data/processed -> models/vae.pt, metrics/history.csv, metrics/train.json, one MLflow run."""

import csv
import time
from pathlib import Path

import torch

from mnist_vae import training
from mnist_vae.cli import run_stage
from mnist_vae.io import atomic_path, load_npz, save_json, sha256_file
from mnist_vae.model import VAE, save_checkpoint
from mnist_vae.params import flatten
from mnist_vae.tracking import log_model, training_run

TRAIN, TEST = Path("data/processed/train.npz"), Path("data/processed/test.npz")
MODEL, RUN = Path("models/vae.pt"), Path("models/mlflow_run.json")
HISTORY, METRICS = Path("metrics/history.csv"), Path("metrics/train.json")


def main(params):
    p = params.train
    if p.threads:
        torch.set_num_threads(p.threads)
    device = training.pick_device(p.device)
    keys = ("x", "y", "p") if p.dynamic_binarization else ("x", "y")
    train_arrays, test_arrays = load_npz(TRAIN, keys, "dequantize"), load_npz(TEST, ("x",), "dequantize")
    n = min(p.max_examples or len(train_arrays["x"]), len(train_arrays["x"]))
    data = training.Data(
        x_train=torch.from_numpy(train_arrays["x"][:n]).to(device),
        x_test=torch.from_numpy(test_arrays["x"]).to(device),
        p_train=torch.from_numpy(train_arrays["p"][:n]).to(device) if p.dynamic_binarization else None,
    )
    torch.manual_seed(params.seed)  # the model's initial weights
    model = VAE(params.model).to(device)
    tags = {"train_data_sha256": sha256_file(TRAIN), "torch_version": torch.__version__, "device": str(device),
            "n_parameters": str(sum(q.numel() for q in model.parameters()))}
    start = time.perf_counter()
    # everything the trained model depends on (evaluate and render log their own sections)
    logged = flatten(params, ("seed", "dequantize", "model", "train", "tracking"))
    with training_run(params.tracking.experiment, RUN, logged, tags) as mlflow:
        history = training.train(
            model, data, p, params.seed, device,
            on_epoch=lambda row: mlflow.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=row["epoch"]),
        )
        total_time = time.perf_counter() - start
        final = {k: v for k, v in history[-1].items() if k != "epoch_time"}
        summary = {**final, "total_time": total_time, "mean_epoch_time": total_time / p.epochs, "n_train": n}
        mlflow.log_metric("train_time", total_time)
        save_checkpoint(MODEL, model)
        _write_history(history)
        save_json(METRICS, summary)
        mlflow.log_artifact(str(HISTORY))
        if params.tracking.log_model:
            log_model(mlflow, model)


def _write_history(history):
    with atomic_path(HISTORY) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows(history)


if __name__ == "__main__":
    run_stage("train", main)

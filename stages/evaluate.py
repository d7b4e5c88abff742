"""evaluate: models/vae.pt on the test set (and a training slice) -> metrics/eval.json, added to the MLflow run."""

import time
from pathlib import Path

import torch

from mnist_vae import evaluation
from mnist_vae.cli import run_stage
from mnist_vae.io import load_npz, save_json
from mnist_vae.model import load_checkpoint
from mnist_vae.params import flatten, flatten_tree
from mnist_vae.training import pick_device
from mnist_vae.tracking import resume_run

TRAIN, TEST = Path("data/processed/train.npz"), Path("data/processed/test.npz")
MODEL, RUN, OUT = Path("models/vae.pt"), Path("models/mlflow_run.json"), Path("metrics/eval.json")


def main(params):
    p = params.evaluate
    device = pick_device(params.train.device)
    model = load_checkpoint(MODEL, device)
    x_test = torch.from_numpy(load_npz(TEST, ("x",), "dequantize")["x"])
    x_train = torch.from_numpy(load_npz(TRAIN, ("x",), "dequantize")["x"][: p.train_slice])
    if p.max_examples:
        x_test = x_test[: p.max_examples]
    with resume_run(RUN, flatten(params, ("evaluate",))) as mlflow:
        torch.manual_seed(params.seed)
        start = time.perf_counter()
        metrics = evaluation.evaluate(model, x_test.to(device), x_train.to(device), p,
                                      model.config.likelihood, params.dequantize.mode)
        metrics["eval_time"] = time.perf_counter() - start
        save_json(OUT, metrics)
        numbers = {k: v for k, v in flatten_tree(metrics, "eval").items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool)}  # lists and notes stay in the file
        mlflow.log_metrics(numbers)
        mlflow.log_artifact(str(OUT))
    t = metrics["test"]
    print(f"test: -ELBO {t['nelbo']:.2f}, IWAE(K={p.iw_samples}) NLL {t['iw_nll']:.2f} ± {t['iw_nll_se']:.2f} nats, "
          f"active units {metrics['posterior']['active_units']}/{model.latent_dim}, {metrics['eval_time']:.1f}s")


if __name__ == "__main__":
    run_stage("evaluate", main)

"""evaluate: models/vae.pt on the test set (and a training slice) -> metrics/eval.json."""

import time
from pathlib import Path

import torch

from mnist_vae import evaluation
from mnist_vae.cli import run_stage
from mnist_vae.io import load_npz, save_json
from mnist_vae.model import load_checkpoint
from mnist_vae.training import pick_device

TRAIN, TEST = Path("data/processed/train.npz"), Path("data/processed/test.npz")
MODEL, OUT = Path("models/vae.pt"), Path("metrics/eval.json")


def main(params):
    p = params.evaluate
    device = pick_device(params.train.device)
    model = load_checkpoint(MODEL, device)
    x_test = torch.from_numpy(load_npz(TEST, ("x",), "dequantize")["x"])
    x_train = torch.from_numpy(load_npz(TRAIN, ("x",), "dequantize")["x"][: p.train_slice])
    if p.max_examples:
        x_test = x_test[: p.max_examples]
    torch.manual_seed(params.seed)
    start = time.perf_counter()
    metrics = evaluation.evaluate(model, x_test.to(device), x_train.to(device), p,
                                  model.config.likelihood, params.dequantize.mode)
    metrics["eval_time"] = time.perf_counter() - start
    save_json(OUT, metrics)
    t = metrics["test"]
    print(f"test: -ELBO {t['nelbo']:.2f}, IWAE(K={p.iw_samples}) NLL {t['iw_nll']:.2f} ± {t['iw_nll_se']:.2f} nats, "
          f"active units {metrics['posterior']['active_units']}/{model.latent_dim}, {metrics['eval_time']:.1f}s")


if __name__ == "__main__":
    run_stage("evaluate", main)

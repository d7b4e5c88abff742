"""The training step's cost under model.prior vamp (K pseudo-inputs) against the standard prior.

Default model, batch 128, the two models' steps interleaved in one process (so both see the same machine
load), one thread; prints the median time per step after 5 warm-up steps and the ratio, and writes them to
benchmarks/results/vamp_cost.json. Needs data/processed/train.npz (`dvc repro dequantize`).
Usage: python benchmarks/vamp_cost.py [K] [steps]
"""

import sys
import time

import numpy as np
import provenance
import torch

from mnist_vae.params import ModelParams, TrainParams
from mnist_vae.vae import training
from mnist_vae.vae.model import VAE


def main(k: int = 500, steps: int = 40) -> None:
    torch.set_num_threads(1)
    p = TrainParams()
    x = torch.from_numpy(np.load("data/processed/train.npz")["x"][:p.batch_size * steps])
    models = {}
    for prior in ("standard", "vamp"):
        torch.manual_seed(0)
        model = VAE(ModelParams(prior=prior, vamp_components=k))
        models[prior] = (model, training.make_optimizer(model, p))
    times: dict[str, list[float]] = {prior: [] for prior in models}
    for xb in x.split(p.batch_size):
        for prior, (model, optimizer) in models.items():
            start = time.perf_counter()
            rec, kl, _ = training.loss_terms(model, xb, p)
            optimizer.zero_grad()
            (rec + kl).sum().backward()
            optimizer.step()
            times[prior].append(time.perf_counter() - start)
    median = {prior: float(np.median(t[5:])) for prior, t in times.items()}
    per_epoch = -(-60000 // p.batch_size)
    for prior, t in median.items():
        print(f"{prior:8s} {1000 * t:7.1f} ms per step, {t * per_epoch:6.1f} s per epoch of {per_epoch} steps")
    print(f"vamp (K = {k}) / standard: {median['vamp'] / median['standard']:.2f}x")
    path = provenance.write("vamp_cost", {
        "components": k, "steps": steps, "batch_size": p.batch_size, "steps_per_epoch": per_epoch,
        "ms_per_step": {prior: 1000 * t for prior, t in median.items()},
        "ratio": median["vamp"] / median["standard"]})
    print(f"written to {path}")


if __name__ == "__main__":
    main(*map(int, sys.argv[1:]))

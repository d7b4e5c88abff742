"""Latent samplers of one trained model, side by side: the prior and Gaussian mixtures of several sizes
fitted to mu(x) or to draws of q(z|x), each scored as evaluate scores samples (FID, precision, recall
and class entropy against the test digits, in the project classifier's feature space), with the mean
log-density of the test digits' codes and the fit's time; plus decoded real codes (mu(x) of training
digits), roughly the floor of any sampler of this decoder.

    python benchmarks/samplers.py [--project DIR] [--components 10 50 100] [--fit-on mu draws] [-o out.json]

DIR is a project the pipeline has run in (models/vae.pt, models/classifier.pt, data/); the default is
the working directory. Prints a Markdown table; every number comes from this one run.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import provenance
import torch

from mnist_vae.data.dequantize import to_pixel_scale
from mnist_vae.files import load_npz
from mnist_vae.params import SamplerParams, load_params
from mnist_vae.scoring import classifier, quality
from mnist_vae.vae import samplers
from mnist_vae.vae.model import load_checkpoint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path, default=Path("."))
    parser.add_argument("--components", type=int, nargs="+", default=[10, 50, 100])
    parser.add_argument("--fit-on", nargs="+", default=["mu", "draws"], choices=["mu", "draws"])
    parser.add_argument("-o", "--output", type=Path)
    args = parser.parse_args()
    root = args.project
    params = load_params(root / "params.yaml")
    seed, mode, p = params.seed, params.dequantize.mode, params.quality
    model = load_checkpoint(root / "models/vae.pt")
    digits = classifier.load(root / "models/classifier.pt")
    raw = load_npz(root / "data/raw/mnist.npz", ("x_test",))
    x_train = torch.from_numpy(load_npz(root / "data/processed/train.npz", ("x",))["x"])
    x_test = torch.from_numpy(load_npz(root / "data/processed/test.npz", ("x",))["x"])
    f_test, _ = classifier.predict(digits, classifier.scale_pixels(raw["x_test"]))
    rows = []

    def score(name: str, images: torch.Tensor, **extra):
        scores, coverage = quality.sample_quality(digits, images, f_test, p)
        rows.append({"sampler": name, "fid": scores["fid"], "precision": scores["precision"],
                     "recall": scores["recall"], "class_entropy": coverage["entropy"], **extra})
        print(json.dumps(rows[-1]), flush=True)

    g = torch.Generator().manual_seed
    for fit_on in args.fit_on:
        test_density = samplers.code_log_density(model, None, x_test, fit_on, g(seed))
        if fit_on == args.fit_on[0]:
            score("prior", quality.generate(model, samplers.get(model, None, "prior"), p.n_samples, mode, g(seed)),
                  test_code_log_density={fit_on: test_density["prior"]})
        for k in args.components:
            start = time.perf_counter()
            state, summary = samplers.fit(model, x_train, SamplerParams(fit_on=fit_on, gmm_components=k), seed)
            fit_time = time.perf_counter() - start
            fitted = samplers.Fitted(state)
            density = samplers.code_log_density(model, fitted, x_test, fit_on, g(seed))
            score(f"gmm {k} on {fit_on}", quality.generate(model, samplers.get(model, fitted, "gmm"), p.n_samples, mode, g(seed)),
                  test_code_log_density={fit_on: density["gmm"], "prior": density["prior"]},
                  fit_time=fit_time, gmm_fit_time=summary["samplers"]["gmm"]["fit_time"],
                  converged=summary["samplers"]["gmm"]["converged"], n_iter=summary["samplers"]["gmm"]["n_iter"])
    with torch.no_grad():
        mu = samplers.codes(model, x_train[: p.n_samples], "mu", g(seed)).float()
        score("decoded mu(x) of training digits", to_pixel_scale(model.mean(model.decode(mu)), mode))
    print("\n| z drawn from | FID | precision | recall | class entropy | test-code log-density | fit time (s) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        dens = r.get("test_code_log_density", {})
        d = next((f"{v:.1f} ({k})" for k, v in dens.items() if k != "prior"), "")
        print(f"| {r['sampler']} | {r['fid']:.1f} | {r['precision']:.3f} | {r['recall']:.3f} | {r['class_entropy']:.3f} "
              f"| {d} | {r.get('fit_time', float('nan')):.1f} |")
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        out = {"provenance": provenance.block(), "rows": rows, "n_samples": p.n_samples, "seed": seed}
        args.output.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()

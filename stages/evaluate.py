"""evaluate: models/vae.pt (and the samplers fitted to it) on the test set (and a training slice) -> metrics/eval.json,
and the best sampler by sample FID -> models/best_sampler.json (what sampling uses when no sampler is named)."""

import time
from pathlib import Path

import torch

from mnist_vae.files import load_npz, save_json
from mnist_vae.pipeline.stage import run_stage
from mnist_vae.scoring import classifier, quality
from mnist_vae.vae import evaluation, samplers
from mnist_vae.vae.device import pick_device
from mnist_vae.vae.model import load_checkpoint
from mnist_vae.vae.samplers import choice

TRAIN, TEST = Path("data/processed/train.npz"), Path("data/processed/test.npz")
RAW, CLASSIFIER = Path("data/raw/mnist.npz"), Path("models/classifier.pt")
MODEL, OUT = Path("models/vae.pt"), Path("metrics/eval.json")
SAMPLER, CHOICE = Path("models/sampler.pt"), Path("models/best_sampler.json")


def main(params):
    p = params.evaluate
    device = pick_device(params.train.device)
    model = load_checkpoint(MODEL, device)
    fitted = samplers.load(SAMPLER, MODEL)
    test = {k: torch.from_numpy(v) for k, v in load_npz(TEST, ("x", "y")).items()}
    train = {k: torch.from_numpy(v) for k, v in load_npz(TRAIN, ("x", "y")).items()}
    raw = load_npz(RAW, ("x_train", "x_test"))
    digit_classifier = classifier.load(CLASSIFIER)
    x_test = test["x"][: p.max_examples] if p.max_examples else test["x"]
    torch.manual_seed(params.seed)
    start = time.perf_counter()
    metrics = evaluation.evaluate(model, x_test.to(device), train["x"][: p.train_slice].to(device), p,
                                  model.config.likelihood, params.dequantize.mode)
    metrics["eval_time"] = time.perf_counter() - start
    start = time.perf_counter()
    q = metrics["quality"] = quality.evaluate(
        model, fitted, digit_classifier, {"x": train["x"].to(device), "y": train["y"]},
        {"x": test["x"].to(device), "y": test["y"]}, raw, params.dequantize.mode, params.quality,
        torch.Generator().manual_seed(params.seed), sampler_seed=params.seed, temperature=params.sampler.temperature,
        x_held_out=samplers.held_out(fitted, train["x"], SAMPLER).to(device))
    q["code_log_density"] = samplers.code_log_density(
        model, fitted, test["x"].to(device), fitted.fit_on, torch.Generator().manual_seed(params.seed))
    q["best"] = quality.best(q)
    metrics["quality_time"] = time.perf_counter() - start
    save_json(OUT, metrics)
    choice.record(CHOICE, *quality.sampler_fids(q), MODEL, SAMPLER)
    report(metrics, p.iw_samples, model.latent_dim)


def report(metrics: dict, iw_samples: int, latent_dim: int) -> None:
    """What a person reads at the end of the stage."""
    t, q = metrics["test"], metrics["quality"]
    print(f"test: -ELBO {t['nelbo']:.2f}, IWAE(K={iw_samples}) NLL {t['iw_nll']:.2f} ± {t['iw_nll_se']:.2f} nats, "
          f"active units {metrics['posterior']['active_units']}/{latent_dim}, {metrics['eval_time']:.1f}s")
    print(f"quality: sample FID {q['samples']['fid']:.2f} (train/test floor {q['reference']['fid']:.2f}), "
          f"precision {q['samples']['precision']:.3f}, recall {q['samples']['recall']:.3f}, "
          f"reconstruction accuracy {q['reconstructions']['accuracy']:.4f}, probe {q['probe']['test_accuracy']:.4f}, "
          f"{metrics['quality_time']:.1f}s")
    density, floor = q["code_log_density"], q["floor"]
    print(f"quality: decoder floor (decoded mu(x) of {floor['n']} held-out training digits): FID {floor['fid']:.2f}, "
          f"precision {floor['precision']:.3f}, recall {floor['recall']:.3f}")
    for name, scores in q["samplers"].items():
        s = scores["samples"]
        print(f"quality: sampler {name} (T = {scores['temperature']:g}): sample FID {s['fid']:.2f} (prior {q['samples']['fid']:.2f}, "
              f"{scores['floor_gap_fid']:+.2f} over the floor), precision {s['precision']:.3f}, recall {s['recall']:.3f}, "
              f"class entropy {scores['class_coverage']['entropy']:.3f}; test-code log-density {density[name]:.2f} nats "
              f"(prior {density['prior']:.2f})")
    print(f"quality: the best sampler is {q['best']['sampler']} (FID {q['best']['fid']:.2f}): sampling uses it when no "
          f"sampler is named ({CHOICE})")

if __name__ == "__main__":
    run_stage("evaluate", main)

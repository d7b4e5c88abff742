"""sampler: models/vae.pt and the training digits -> models/sampler.pt (latent densities fitted to the codes of
the training digits but the last sampler.held_out, with the checkpoint's digest) and metrics/sampler.json (the
fit's timings and convergence)."""

import time
from pathlib import Path

import torch

from mnist_vae.files import load_npz, save_json, sha256_file
from mnist_vae.pipeline.stage import run_stage
from mnist_vae.vae import samplers
from mnist_vae.vae.device import pick_device
from mnist_vae.vae.model import load_checkpoint

TRAIN, MODEL = Path("data/processed/train.npz"), Path("models/vae.pt")
OUT, METRICS = Path("models/sampler.pt"), Path("metrics/sampler.json")


def main(params):
    start, cpu = time.perf_counter(), time.process_time()
    digest = sha256_file(MODEL)
    model = load_checkpoint(MODEL, pick_device(params.train.device))
    x = torch.from_numpy(load_npz(TRAIN, ("x",))["x"]).to(next(model.parameters()).device)
    state, summary = samplers.fit(model, x, params.sampler, params.seed, say=lambda line: print(f"sampler: {line}", flush=True))
    summary["stage_time"], summary["stage_cpu_time"] = time.perf_counter() - start, time.process_time() - cpu
    save_json(METRICS, summary)
    samplers.save(OUT, state, digest)
    for name, s in summary["samplers"].items():
        print(f"sampler: {name}: {s['components']} components on {summary['n_codes']} codes ({summary['fit_on']}; the "
              f"last {summary['held_out']} training digits held out), {'converged' if s['converged'] else 'not converged'} "
              f"after {s['n_iter']} EM iterations, {s['fit_time']:.1f}s ({s['fit_cpu_time']:.1f}s of CPU); train-code "
              f"log-density {s['train_code_log_density']:.2f} nats")
    print(f"sampler: wrote {OUT} ({', '.join(state['samplers']) or 'no fitted samplers'}) in {summary['stage_time']:.1f}s "
          f"({summary['stage_cpu_time']:.1f}s of CPU)")


if __name__ == "__main__":
    run_stage("sampler", main)

"""Burda et al.'s training schedule, checkpoint by checkpoint, resumed as a user would resume it.

Run in a clone of the project (its own `data/`, `models/`), on the README's Burda et al. model
(dynamically binarized MNIST, 2x200 tanh, 50 latent units, `train.lr_schedule: burda`):

    python benchmarks/burda_schedule.py --repo /tmp/burda --targets 1,4,13,40,121,364,1093
    python benchmarks/burda_schedule.py --repo /tmp/burda-vamp --prior vamp --targets 1,4,13,40,121 \
        --set train.kl_warmup_epochs=100

For each target it sets `train.epochs` in the clone's params.yaml and runs `dvc repro train` there,
which resumes from `models/train_state.pt` (the line `train: resuming from epoch k of n`), then scores
the checkpoint: the test NLL by importance sampling (K = --k, the first --examples test digits, the
draws seeded with `seed` as the evaluate stage seeds them). One JSON line per checkpoint goes to
<repo>/nll.jsonl; a target already there is skipped, so the script itself can be stopped and rerun.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml

PAPER = {"dequantize.mode": "binarize", "model.hidden_dims": [200, 200], "model.activation": "tanh",
         "model.latent_dim": 50, "train.dynamic_binarization": True, "train.lr_schedule": "burda"}


def score(repo: Path, k: int, examples: int, seed: int) -> dict:
    from mnist_vae.files import load_history, load_npz
    from mnist_vae.vae import evaluation
    from mnist_vae.vae.model import load_checkpoint

    model = load_checkpoint(repo / "models" / "vae.pt")
    x = torch.from_numpy(load_npz(repo / "data" / "processed" / "test.npz", ("x",))["x"][:examples])
    torch.manual_seed(seed)
    start = time.perf_counter()
    with torch.no_grad():
        iw = evaluation.importance_sampled(model, x, k)
    log_px = iw["log_px"].double()
    last = load_history(repo / "metrics" / "history.csv")[-1]
    return {"nll": -log_px.mean().item(), "se": log_px.std().item() / math.sqrt(len(log_px)),
            "elbo": (iw["rec"] + iw["kl"]).double().mean().item(), "examples": len(log_px), "k": k,
            "lr": last["lr"], "test_elbo_1": last["test_total"], "score_s": time.perf_counter() - start}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repo", type=Path, required=True, help="a clone of the project (data prepared or not)")
    ap.add_argument("--targets", default="1,4,13,40,121,364,1093", help="cumulative epochs to stop and score at")
    ap.add_argument("--prior", default="standard", choices=["standard", "vamp"])
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                    help="another param for the training, e.g. train.kl_warmup_epochs=100 (YAML value)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--k", type=int, default=5000)
    ap.add_argument("--examples", type=int, default=1000, help="first n test digits scored (10000 = all)")
    args = ap.parse_args()
    repo = args.repo.resolve()
    sys.path.insert(0, str(repo / "src"))  # score with the clone's package, as its stages do
    from mnist_vae.ops.search.spec import with_overrides

    torch.set_num_threads(args.threads)
    out = repo / "nll.jsonl"
    done = {json.loads(line)["epochs"] for line in out.read_text().splitlines()} if out.exists() else set()
    # the clone's own package, not whichever one the interpreter has installed (the fingerprint holds its code)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": str(repo / "src")}
    for target in (int(t) for t in args.targets.split(",")):
        if target in done:
            continue
        settings = {**PAPER, "model.prior": args.prior, "train.epochs": target, "train.threads": args.threads}
        settings.update((key, yaml.safe_load(value)) for key, _, value in (item.partition("=") for item in args.set))
        path = repo / "params.yaml"
        path.write_text(yaml.safe_dump(with_overrides(yaml.safe_load(path.read_text()), settings), sort_keys=False))
        start = time.time()
        subprocess.run(["dvc", "repro", "train"], cwd=repo, env=env, check=True)
        row = {"epochs": target, "prior": args.prior, "train_wall_s": time.time() - start,
               **score(repo, args.k, args.examples, yaml.safe_load((repo / "params.yaml").read_text())["seed"]),
               "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        with open(out, "a") as f:
            f.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()

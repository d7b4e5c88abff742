"""What saving the training state every epoch costs, on the default model and the full data.

Trains the default model (params.yaml's model and train sections) for --epochs epochs twice from the
same seed in this one process: once saving models/train_state.pt after every epoch (as
train.checkpoint_every 1 does), once not saving at all; both runs follow the same trajectory. Prints,
as JSON: each save's time (capture + write + fsync + rename), each epoch's time in both runs, and the
overhead (median save time over median epoch time without saving); writes the same to
benchmarks/results/resume.json. Needs data/processed (run
`dvc repro dequantize` first). Writes the state to a temporary folder beside models/, then removes it.

    python benchmarks/resume.py --epochs 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import provenance
import torch

from mnist_vae.files import load_npz
from mnist_vae.params import load_params
from mnist_vae.vae import state as state_module
from mnist_vae.vae import training
from mnist_vae.vae.device import pick_device
from mnist_vae.vae.model import VAE


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    params = load_params()
    p = params.train.model_copy(update={"epochs": args.epochs})
    device = pick_device(p.device)
    x = load_npz("data/processed/train.npz", ("x",))["x"]
    data = training.Data(torch.from_numpy(x).to(device),
                         torch.from_numpy(load_npz("data/processed/test.npz", ("x",))["x"]).to(device))
    fingerprint = state_module.fingerprint(params, {"train data": "-", "test data": "-", "n_train": len(x)}, device)
    Path("models").mkdir(exist_ok=True)
    out = {"epochs": args.epochs, "threads": torch.get_num_threads(), "n_train": len(x),
           "load_average_before": os.getloadavg()}
    with tempfile.TemporaryDirectory(dir="models") as folder:
        path = Path(folder) / "train_state.pt"
        saves = []

        def save(state):
            start = time.perf_counter()
            state_module.save_state(path, state, fingerprint)
            saves.append(time.perf_counter() - start)

        captures, real_capture = [], training.capture

        def timed_capture(*args):
            start = time.perf_counter()
            state = real_capture(*args)
            captures.append(time.perf_counter() - start)
            return state

        histories = {}
        for name, save_state in (("saving", save), ("not_saving", lambda state: None)):
            torch.manual_seed(params.seed)
            model = VAE(params.model).to(device)
            training.capture = timed_capture if name == "saving" else real_capture
            histories[name] = training.train(model, data, p, training.Seeds.from_seed(params.seed), device, save_state=save_state)
        training.capture = real_capture
        out["state_bytes"] = path.stat().st_size
    # a save: the copy of the state taken after the epoch's row (capture), then its write
    saves = [c + w for c, w in zip(captures, saves)]
    out["capture_s"], out["save_s"] = captures, saves
    for name, history in histories.items():
        out[f"epoch_s_{name}"] = [row["epoch_time"] for row in history]
    same = [{k: v for k, v in r.items() if k not in ("epoch_time", "time")} for r in histories["saving"]] == \
        [{k: v for k, v in r.items() if k not in ("epoch_time", "time")} for r in histories["not_saving"]]
    out["same_trajectory"] = same
    epoch = statistics.median(out["epoch_s_not_saving"])
    out["overhead"] = statistics.median(saves) / epoch
    out["load_average_after"] = os.getloadavg()
    print(json.dumps(out, indent=1))
    print(f"written to {provenance.write('resume', out)}")


if __name__ == "__main__":
    main()

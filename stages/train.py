"""train: data/processed -> models/vae.pt, metrics/history.csv (per epoch), metrics/train.json, reports/frames.npz
(the digits before the first epoch and after each); and models/train_state.pt, the state an interrupted or
extended training resumes from (see docs/resume.md)."""

from pathlib import Path

import torch

from mnist_vae.files import load_npz, save_history, save_json, save_npz, sha256_file
from mnist_vae.pipeline import progress
from mnist_vae.pipeline.stage import run_stage
from mnist_vae.vae import state, training
from mnist_vae.vae.device import pick_device
from mnist_vae.vae.frames import RECONSTRUCTIONS, Frames, stack
from mnist_vae.vae.model import VAE, save_checkpoint

TRAIN, TEST = Path("data/processed/train.npz"), Path("data/processed/test.npz")
MODEL, HISTORY, METRICS = Path("models/vae.pt"), Path("metrics/history.csv"), Path("metrics/train.json")
FRAMES = Path("reports/frames.npz")
STATE = Path("models/train_state.pt")


def main(params):
    p = params.train
    if p.threads:
        torch.set_num_threads(p.threads)
    device = pick_device(p.device)
    keys = ("x", "y", "p") if p.dynamic_binarization else ("x", "y")
    train_arrays, test_arrays = load_npz(TRAIN, keys), load_npz(TEST, ("x",))
    n = min(p.max_examples or len(train_arrays["x"]), len(train_arrays["x"]))
    data = training.Data(
        x_train=torch.from_numpy(train_arrays["x"][:n]).to(device),
        x_test=torch.from_numpy(test_arrays["x"]).to(device),
        p_train=torch.from_numpy(train_arrays["p"][:n]).to(device) if p.dynamic_binarization else None,
    )
    digests = {"train data": sha256_file(TRAIN), "test data": sha256_file(TEST), "n_train": n}
    fingerprint = state.fingerprint(params, digests, device, code=(Path(__file__),))
    saved = state.load_state(STATE, fingerprint, p.epochs)
    seeds = training.Seeds.from_seed(params.seed)
    torch.manual_seed(seeds.init)  # the model's initial weights
    model = VAE(params.model).to(device)
    frames = Frames(seeds.frames, data.x_test[:RECONSTRUCTIONS])
    history = training.train(model, data, p, seeds, device, on_epoch=progress.reporter(), state=saved,
                             save_state=lambda s: state.save_state(STATE, s, fingerprint), frames=frames)
    total_time = sum(row["epoch_time"] for row in history)  # each epoch's own time, across resumed runs
    final = {k: v for k, v in history[-1].items() if k not in ("epoch_time", "time")}
    summary = {**final, "total_time": total_time, "mean_epoch_time": total_time / p.epochs, "n_train": n}
    # where the model came from, for the track stage's tags
    provenance = {"train_data_sha256": digests["train data"], "torch_version": str(torch.__version__),
                  "device": str(device), "n_parameters": sum(q.numel() for q in model.parameters())}
    save_checkpoint(MODEL, model, provenance)
    save_history(HISTORY, history)
    save_json(METRICS, summary)
    save_npz(FRAMES, stack(frames.taken, frames.x))


if __name__ == "__main__":
    run_stage("train", main)

"""What the training's frames and the MLflow images cost a default `make repro`, measured on its outputs.

Run in a project after `make repro` (its models/, reports/, metrics/ and data/processed/):

    python benchmarks/frames_cost.py [--out benchmarks/results/frames_cost.json]

It times, in this process, on this machine: taking one frame (vae/frames.py) with the trained model, as
train does before the first epoch and after each; drawing the chosen frames (report/progress.py, as
render does); and the track stage's logging of the same result into two fresh embedded stores, once as
the pipeline logs it and once without the images (no log_image, no progress/ artifacts). The shares are
of the training's own time (metrics/train.json) and of the whole track stage.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import provenance


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def seconds(fn, repeat: int = 1) -> float:
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - start) / repeat


def frame_time(params) -> float:
    import torch

    from mnist_vae.files import load_npz
    from mnist_vae.vae.frames import RECONSTRUCTIONS, Frames
    from mnist_vae.vae.model import load_checkpoint
    from mnist_vae.vae.training import Seeds

    model = load_checkpoint(Path("models/vae.pt"))
    x = torch.from_numpy(load_npz(Path("data/processed/test.npz"), ("x",))["x"][:RECONSTRUCTIONS])
    frames = Frames(Seeds.from_seed(params.seed).frames, x)
    frames.take(model)  # warm
    return seconds(lambda: frames.take(model), repeat=20)


def log_time(result) -> float:
    """Seconds to log `result` into a fresh embedded store."""
    from mnist_vae.pipeline import tracking

    with tempfile.TemporaryDirectory() as store:
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{store}/mlflow.db"
        try:
            return seconds(lambda: tracking.log_result(result))
        finally:
            del os.environ["MLFLOW_TRACKING_URI"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/frames_cost.json"))
    args = parser.parse_args()

    import dataclasses
    import sys

    from mnist_vae.files import load_json, load_npz
    from mnist_vae.params import load_params
    from mnist_vae.report import progress

    sys.path.insert(0, "stages")
    import track  # the track stage's own Result

    params = load_params(Path("params.yaml"))
    epochs = params.train.epochs
    train = load_json(Path("metrics/train.json"))
    one_frame = frame_time(params)
    frames = load_npz(Path("reports/frames.npz"), ("epochs", "samples", "reconstructions", "originals"))
    with tempfile.TemporaryDirectory() as folder:
        draw = seconds(lambda: progress.write(Path(folder), frames, params.render.progress_every))
        drawn = len(list(Path(folder).glob("*.png")))
    result = track.result(params)
    plain = dataclasses.replace(result, images=[], artifacts={k: v for k, v in result.artifacts.items()
                                                              if Path(k) != Path("reports/progress")})
    with_images, without = log_time(result), log_time(plain)
    out = {
        "provenance": provenance.block(),
        "cpu": cpu_name(), "threads": int(os.environ.get("OMP_NUM_THREADS", "0")) or None,
        "epochs": epochs, "train_seconds": train["total_time"],
        "frame_seconds": one_frame, "frames_taken": epochs + 1,
        "frames_share_of_training": (epochs + 1) * one_frame / train["total_time"],
        "frames_file_bytes": Path("reports/frames.npz").stat().st_size,
        "render_progress_seconds": draw, "progress_pngs": drawn,
        "track_seconds": with_images, "track_seconds_without_images": without,
        "images_share_of_track": (with_images - without) / with_images,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()

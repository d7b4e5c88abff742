"""dequantize: data/raw/mnist.npz -> data/processed/{train,test}.npz (float32 x (N, 784), uint8 y)."""

import logging

from mnist_vae.data.dequantize import dequantize_splits
from mnist_vae.data.sources import SPLITS
from mnist_vae.files import load_npz, save_npz
from mnist_vae.pipeline.stage import run_stage

RAW = "data/raw/mnist.npz"
OUT = "data/processed/{split}.npz"


def main(params):
    raw = load_npz(RAW, SPLITS)
    for split, arrays in dequantize_splits(raw, params.dequantize.mode, params.seed).items():
        save_npz(OUT.format(split=split), arrays)
        logging.info("%s: x %s in [%.4f, %.4f]", split, arrays["x"].shape, arrays["x"].min(), arrays["x"].max())


if __name__ == "__main__":
    run_stage("dequantize", main)

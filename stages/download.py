"""download: exact MNIST from data.source -> data/raw/mnist.npz (four uint8 arrays, SHA-256 verified)."""

from mnist_vae import data
from mnist_vae.cli import run_stage
from mnist_vae.io import save_npz

OUT = "data/raw/mnist.npz"


def main(params):
    arrays, _ = data.download(params.data)
    save_npz(OUT, arrays)


if __name__ == "__main__":
    run_stage("download", main)

"""download: exact MNIST from data.source -> data/raw/mnist.npz (four uint8 arrays, SHA-256 verified)."""

from mnist_vae.data import sources
from mnist_vae.files import save_npz
from mnist_vae.pipeline.stage import run_stage

OUT = "data/raw/mnist.npz"


def main(params):
    arrays, _ = sources.download(params.data)
    save_npz(OUT, arrays)


if __name__ == "__main__":
    run_stage("download", main)

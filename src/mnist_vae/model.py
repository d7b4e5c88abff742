"""The model's old import path (mnist_vae.model): the VAE now lives in mnist_vae.vae.model."""

from mnist_vae.vae.model import VAE, checkpoint_provenance, load_checkpoint, save_checkpoint  # noqa: F401

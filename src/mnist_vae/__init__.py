"""mnist-vae: a reproducible VAE on MNIST (download -> dequantize -> train -> evaluate -> render)."""

__version__ = "0.1.0"

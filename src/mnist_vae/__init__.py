"""mnist-vae: a reproducible VAE on MNIST (download -> dequantize -> train -> evaluate -> render).

Using a trained model (see mnist_vae.inference for shapes and ranges)::

    from mnist_vae import load, preprocess, postprocess
    vae = load("models/vae.pt")                     # or "runs:/<id>/vae-mlp-bernoulli-z20", "models:/mnist-vae/1"
    x = preprocess(pixels, vae.dequantize)          # uint8 (N, 28, 28) -> float32 (N, 784) model input
    mu, logvar = vae.encode(x)                      # each (N, latent_dim)
    images = postprocess(vae.mean(vae.decode(mu)))  # uint8 (N, 28, 28)
"""

__version__ = "0.1.0"

__all__ = ["load", "preprocess", "postprocess"]


def __getattr__(name):  # imported on first use, so `import mnist_vae` stays as light as the stages need
    if name in __all__:
        from mnist_vae import inference

        return getattr(inference, name)
    raise AttributeError(f"module 'mnist_vae' has no attribute {name!r}")

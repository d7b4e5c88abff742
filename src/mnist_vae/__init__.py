"""mnist-vae: a reproducible VAE on MNIST (download -> dequantize -> train -> evaluate -> render).

Using a trained model (api/tasks.py for shapes and ranges)::

    from mnist_vae import decode, encode, load, postprocess, preprocess, sample
    model = load("models/vae.pt")                   # or "runs:/<id>/vae-mlp-bernoulli-z20", "models:/mnist-vae/1"
    x = preprocess(pixels, model.dequantize)        # uint8 (N, 28, 28) -> float32 (N, 784) model input
    mu, logvar = encode(model, x)                   # each (N, latent_dim)
    images = postprocess(decode(model, mu))         # uint8 (N, 28, 28)
    digits = sample(model, 64, seed=0)              # (64, 784) decoder means in [0, 1]

The package's layers, each a folder (top to bottom): command_line, ops, pipeline, report | api, scoring,
vae, data, and the core modules (params, files, errors). A layer uses only the layers below it; the
contract is in pyproject.toml ([tool.importlinter]) and checked by the tests.
"""

__version__ = "0.1.0"

# the Python API, imported on first use, so `import mnist_vae` stays as light as the stages need
API = {"load": "mnist_vae.api.loading", **{name: "mnist_vae.api.tasks" for name in (
    "preprocess", "postprocess", "sample", "encode", "decode", "reconstruct", "interpolate", "traverse", "kl_order")}}
__all__ = list(API)


def __getattr__(name):
    if name in API:
        import importlib

        return getattr(importlib.import_module(API[name]), name)
    raise AttributeError(f"module 'mnist_vae' has no attribute {name!r}")

"""The command's arguments."""

from __future__ import annotations

import argparse

from mnist_vae.api import loading
from mnist_vae.command_line.output import PROG
from mnist_vae.data.dequantize import MODES as DEQUANTIZE_MODES


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: `mnist-vae: error: ...` and a pointer to --help."""

    def error(self, message: str):
        self.exit(2, f"{PROG}: error: {message} (see `{self.prog} --help`)\n")


def positive_int(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {n}")
    return n


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--model", default=loading.DEFAULT_MODEL,
                        help="a checkpoint (default models/vae.pt), runs:/<run id>/<model name> or models:/<name>/<version> "
                             "(MLflow; MLFLOW_TRACKING_URI from the environment)")
    common.add_argument("--dequantize", choices=DEQUANTIZE_MODES,
                        help="the dequantization the model was trained with (default: read from dvc.lock / params.yaml "
                             "beside the checkpoint, or from the MLflow model or run)")
    common.add_argument("--data", help="test digits: an mnist.npz (x_test; default data/raw/mnist.npz) or a data/processed/test.npz (x)")

    parser = Parser(prog=PROG, description="Use a trained MNIST VAE: sample, reconstruct, encode, decode, "
                    "interpolate, traverse, info.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Parser)

    def add(name, help_, epilog=None):
        return sub.add_parser(name, help=help_, description=help_, parents=[common], epilog=epilog,
                              formatter_class=argparse.RawDescriptionHelpFormatter)

    p = add("sample", "decode draws of z from the model's best sampler (the prior, or a sampler fitted to the training "
            "digits' codes) into images",
            "examples: mnist-vae sample -n 64 --seed 0 -o samples.png   (the best sampler: evaluate's lowest sample FID)\n"
            "          mnist-vae sample --sampler prior -o prior.png   (`mnist-vae info` lists the model's samplers)")
    p.add_argument("-n", type=positive_int, default=64, help="how many samples (default 64)")
    p.add_argument("--seed", type=int, default=0, help="seed of the draws (default 0)")
    p.add_argument("--temperature", type=float,
                   help="scale T of the standard prior's standard deviation (of each mixture component's for gmm; default: the "
                        "temperature evaluate scored the sampler at, sampler.temperature for a fitted one, 1 for the prior; "
                        "a VampPrior takes only 1)")
    p.add_argument("--sampler",
                   help="prior (z ~ p(z)) or a fitted sampler: gmm (fitted by the pipeline's sampler stage into "
                        "models/sampler.pt); default: the model's best, the lowest sample FID evaluate recorded "
                        "(models/best_sampler.json), else the prior")
    p.add_argument("-o", "--output", default="samples.png", help=".png grid or .npy (n, 784) means in [0, 1] (default samples.png)")

    p = add("reconstruct", "encode inputs and decode their encoder means", "example: mnist-vae reconstruct 0 1 2 my_seven.png -o recon.png")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="test-digit index or image file (PNG/JPEG, any size and colour)")
    p.add_argument("-o", "--output", default="reconstructions.png", help=".png (inputs above reconstructions) or .npy (N, 784)")

    p = add("encode", "the posterior q(z|x) = N(mu, exp(logvar)) of each input", "example: mnist-vae encode 0 7 -o z.json")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="test-digit index or image file")
    p.add_argument("-o", "--output", help=".json {inputs, mu, logvar} or .npy (N, 2, latent_dim); default: JSON on stdout")

    p = add("decode", "latent vectors -> images", "examples: mnist-vae decode '[0, 1.5, 0, 0]' -o one.png\n"
            "          mnist-vae decode --dims 3=1.5 -o one.png\n          mnist-vae decode z.json -o decoded.png")
    p.add_argument("latent", nargs="?", help="a JSON list (one vector or a list of them), or a .json/.npy file (an `encode` output too)")
    p.add_argument("--dims", nargs="+", default=[], metavar="UNIT=VALUE", help="set these units (others 0, or those of LATENT)")
    p.add_argument("-o", "--output", default="decoded.png", help=".png grid or .npy (N, 784)")

    p = add("interpolate", "decode a path between two latent points", "example: mnist-vae interpolate 3 7 --steps 10 --slerp -o strip.png")
    p.add_argument("start", metavar="A", help="test-digit index, image file (its encoder mean), or latent vector (JSON list / .json / .npy)")
    p.add_argument("end", metavar="B", help="the other end, as A")
    p.add_argument("--steps", type=int, default=10, help="points on the path, both ends included (default 10)")
    p.add_argument("--slerp", action="store_true", help="spherical interpolation (the usual choice for Gaussian latents); default linear")
    p.add_argument("-o", "--output", default="interpolation.png", help=".png strip or .npy (steps, 784)")

    p = add("traverse", "vary one latent unit at a time, the units ordered by their KL on test digits",
            "example: mnist-vae traverse --range -3 3 --steps 9 -o traverse.png\n         mnist-vae traverse --dim 4 --from 0 -o unit4.png")
    p.add_argument("--dim", type=int, help="only this unit (default: the --units units with the largest KL)")
    p.add_argument("--units", type=positive_int, default=10, help="how many units, largest KL first (default 10)")
    p.add_argument("--range", type=float, nargs=2, default=[-3.0, 3.0], metavar=("LO", "HI"), help="values of the unit (default -3 3)")
    p.add_argument("--steps", type=int, default=9, help="values from LO to HI (default 9)")
    p.add_argument("--from", dest="base", metavar="INPUT", help="start from this input's encoder mean (test index, image or latent); default z = 0")
    p.add_argument("--kl-digits", type=positive_int, default=1000, help="test digits the KL per unit is averaged over (default 1000)")
    p.add_argument("-o", "--output", default="traverse.png", help=".png (a row per unit), .npy (units, steps, 784) or .json")

    p = add("info", "the model's params, training and evaluation numbers, and where it came from", "example: mnist-vae info --model models:/mnist-vae/1")
    p.add_argument("-o", "--output", help="write the JSON here instead of stdout")

    # no --model: the search trains models rather than using one
    p = sub.add_parser("search", help="a hyperparameter search with Optuna: each trial a DVC experiment (docs/search.md)",
                       description="params.yaml's `search` section as an Optuna study in MNIST_VAE_SEARCH_STORAGE "
                       "(default sqlite:///optuna.db here; postgresql://... to share it between hosts)")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION", parser_class=Parser)
    a = actions.add_parser("run", help="work on the study until it has search.n_trials COMPLETE trials",
                           description="work on the study until it has search.n_trials COMPLETE trials; start "
                           "as many workers as you like, in clones on any hosts",
                           epilog="example: MNIST_VAE_SEARCH_STORAGE=postgresql://optuna@db:5432/optuna "
                           "mnist-vae search run --workers 2")
    a.add_argument("--workers", type=positive_int, default=1, help="worker processes in this clone (default 1)")
    a.add_argument("--threads", type=positive_int,
                   help="torch threads per trial (OMP_NUM_THREADS); default cores // workers. With workers in "
                   "several clones on one host, give each cores // (workers on the host)")
    a.add_argument("--heartbeat", type=positive_int, default=10,
                   help="seconds between a worker's heartbeats; a trial silent for 3 of them is FAIL and retried (default 10)")
    actions.add_parser("status", help="the study's trials by state and the best so far")
    a = actions.add_parser("dashboard", help="optuna-dashboard over the study's storage")
    a.add_argument("--host", default="127.0.0.1", help="interface (default 127.0.0.1)")
    a.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    return parser



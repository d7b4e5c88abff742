"""The `mnist-vae` command: use a trained VAE from the shell (sample, reconstruct, encode, decode,
interpolate, traverse, info). Each subcommand has --help; each takes --model as a checkpoint path
(default models/vae.pt), runs:/<run id>/<model name> or models:/<name>/<version>.

Test digits are named by their index in the test set: data/raw/mnist.npz's pixels through
`preprocess` (deterministic, and what a client of the served model sends), or without it
data/processed/test.npz (the pipeline's own dequantized test input, with its noise); --data points
elsewhere. Image files are read as mnist_vae.images.read_digit describes.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import warnings
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from mnist_vae import inference, samplers
from mnist_vae.errors import UserError
from mnist_vae.io import atomic_path, save_json

PROG = "mnist-vae"
PROCESSED_TEST, RAW = Path("data/processed/test.npz"), Path("data/raw/mnist.npz")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
GRID_COLUMNS = 16  # reconstruct: pairs of rows of at most this many digits


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: `mnist-vae: error: ...` and a pointer to --help."""

    def error(self, message: str):
        self.exit(2, f"{PROG}: error: {message} (see `{self.prog} --help`)\n")


def note(message: str) -> None:
    print(f"{PROG}: {message}", file=sys.stderr)


# --------------------------------------------------------------------------- inputs


class TestDigits:
    """The test set, read once on first use: model inputs (N, 784) and labels."""

    def __init__(self, path: Optional[str], model):
        self.path, self.model = path, model
        self._x: Optional[torch.Tensor] = None
        self.labels: Optional[np.ndarray] = None

    def _load(self) -> torch.Tensor:
        if self._x is not None:
            return self._x
        candidates = [Path(self.path)] if self.path else [RAW, PROCESSED_TEST]
        path = next((c for c in candidates if c.is_file()), None)
        if path is None:
            raise UserError(f"no test digits: {' or '.join(map(str, candidates))} is missing; "
                            "run `dvc repro download` or pass --data mnist.npz|test.npz")
        try:
            with np.load(path, allow_pickle=False) as f:
                if "x_test" in f.files:  # raw MNIST (Keras layout): uint8 pixels
                    x, self.labels = inference.preprocess(f["x_test"], self.model.dequantize), f["y_test"] if "y_test" in f.files else None
                elif "x" in f.files:  # data/processed: already the model's input
                    x, self.labels = torch.from_numpy(np.asarray(f["x"], np.float32)), f["y"] if "y" in f.files else None
                else:
                    raise UserError(f"{path} holds neither 'x' (data/processed) nor 'x_test' (mnist.npz); pass --data test.npz|mnist.npz")
        except (OSError, ValueError) as exc:
            raise UserError(f"{path} is not a readable .npz ({exc.__class__.__name__}); pass --data test.npz|mnist.npz") from None
        self._x = x.reshape(len(x), -1)
        return self._x

    def __len__(self) -> int:
        return len(self._load())

    def get(self, index: int) -> torch.Tensor:
        x = self._load()
        if not 0 <= index < len(x):
            raise UserError(f"test digit {index} is out of range: the test set has {len(x)} digits (0..{len(x) - 1})")
        return x[index]

    def first(self, n: int) -> torch.Tensor:
        return self._load()[:n]


def is_index(text: str) -> bool:
    return text.lstrip("-").isdigit()


def read_inputs(names: Sequence[str], model, digits: TestDigits) -> torch.Tensor:
    """Test-digit indices and image files -> the model's inputs (N, 784), saying what was done to each file."""
    rows = []
    for name in names:
        if is_index(name):
            rows.append(digits.get(int(name)))
        else:
            from mnist_vae.images import read_digit

            pixels, how = read_digit(name)
            note(f"{name}: {how}")
            rows.append(inference.preprocess(pixels, model.dequantize)[0])
    return torch.stack(rows)


def parse_latents(text: str, latent_dim: int) -> torch.Tensor:
    """A JSON list (one vector or a list of vectors), or a .json / .npy file of them (an `encode` output
    too: its mu is used) -> (N, latent_dim)."""
    path = Path(text)
    if path.suffix in (".npy", ".json") and not text.lstrip().startswith("["):
        if not path.is_file():
            raise UserError(f"{path} does not exist; give latent vectors as a JSON list, a .json or a .npy file")
        try:
            if path.suffix == ".npy":
                value = np.load(path, allow_pickle=False)
                if value.ndim == 3 and value.shape[1] == 2:  # an `encode` output: (N, 2, d) = (mu, logvar)
                    value = value[:, 0]
            else:
                value = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise UserError(f"{path} is not a readable {path.suffix} file ({exc.__class__.__name__})") from None
    else:
        try:
            value = json.loads(text)
        except ValueError:
            raise UserError(f"{text!r} is not a JSON list of numbers nor a .json/.npy file of latent vectors") from None
    if isinstance(value, dict) and "mu" in value:
        value = value["mu"]
    return inference.as_latents(value, latent_dim)


def parse_dims(items: Sequence[str], latent_dim: int) -> dict[int, float]:
    dims = {}
    for item in items:
        key, sep, value = item.partition("=")
        try:
            j, v = int(key), float(value)
        except ValueError:
            raise UserError(f"--dims takes UNIT=VALUE pairs such as 3=1.5, got {item!r}") from None
        if not sep or not 0 <= j < latent_dim:
            raise UserError(f"--dims {item!r}: the unit must be in 0..{latent_dim - 1} (this model's latent_dim is {latent_dim})")
        dims[j] = v
    return dims


def endpoint(text: str, model, digits: TestDigits) -> torch.Tensor:
    """An interpolation end: a test index or an image file (its encoder mean), or a latent vector."""
    if is_index(text) or Path(text).suffix.lower() in IMAGE_SUFFIXES:
        return inference.encode(model, read_inputs([text], model, digits))[0][0]
    z = parse_latents(text, model.latent_dim)
    if len(z) != 1:
        raise UserError(f"{text}: an interpolation end is one latent vector, got {len(z)}")
    return z[0]


# --------------------------------------------------------------------------- outputs


def check_output(path: str, allowed: tuple[str, ...]) -> Path:
    out = Path(path)
    if out.suffix.lower() not in allowed:
        raise UserError(f"-o {path}: write {' or '.join(allowed)}")
    return out


def grid(images: torch.Tensor, columns: Optional[int] = None) -> np.ndarray:
    """(N, 784) -> (rows, columns, 784), the last row padded with NaN (blank)."""
    n = len(images)
    columns = columns or math.ceil(math.sqrt(n))
    rows = math.ceil(n / columns)
    out = np.full((rows * columns, images.shape[-1]), np.nan, np.float32)
    out[:n] = images.numpy()
    return out.reshape(rows, columns, -1)


def write_npy(path: Path, array) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, np.asarray(array, dtype=np.float32), allow_pickle=False)


def write_images(out: Path, images: torch.Tensor, what: str, columns: Optional[int] = None) -> None:
    """(N, 784) images -> .npy, or a .png grid of `columns` columns (default: about square)."""
    from mnist_vae.images import save_grid

    if out.suffix.lower() == ".npy":
        write_npy(out, images)
    else:
        save_grid(out, grid(images, columns))
    note(f"wrote {out} ({what})")


# --------------------------------------------------------------------------- subcommands


def cmd_sample(args, model, digits):
    out = check_output(args.output, (".png", ".npy"))
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always", UserWarning)
        images = inference.sample(model, args.n, args.seed, args.temperature, args.sampler)
    for warning in said:
        note(str(warning.message))
    used = args.sampler if not said else samplers.PRIOR
    write_images(out, images, f"{args.n} samples from the sampler {used}, seed {args.seed}, temperature {args.temperature:g}")


def cmd_reconstruct(args, model, digits):
    out = check_output(args.output, (".png", ".npy"))
    x = read_inputs(args.inputs, model, digits)
    recon = inference.reconstruct(model, x)
    if out.suffix.lower() == ".npy":
        write_npy(out, recon)
    else:
        from mnist_vae.images import save_grid

        blocks, labels = [], []
        for start in range(0, len(x), GRID_COLUMNS):
            for rows, label in ((x, "input"), (recon, "reconstruction")):
                block = np.full((GRID_COLUMNS if len(x) > GRID_COLUMNS else len(x), x.shape[1]), np.nan, np.float32)
                part = rows[start:start + GRID_COLUMNS].numpy()
                block[:len(part)] = part
                blocks.append(block)
                labels.append(label)
        save_grid(out, np.stack(blocks), labels, "inputs and E[x | z = μ(x)]")
    note(f"wrote {out} ({len(x)} reconstructions)")


def cmd_encode(args, model, digits):
    out = check_output(args.output, (".json", ".npy")) if args.output else None
    mu, logvar = inference.encode(model, read_inputs(args.inputs, model, digits))
    if out is not None and out.suffix.lower() == ".npy":
        write_npy(out, torch.stack([mu, logvar], 1))
        note(f"wrote {out} (shape {(len(mu), 2, model.latent_dim)}: [:, 0] is mu, [:, 1] is log sigma^2)")
        return
    result = {"inputs": list(args.inputs), "dequantize": model.dequantize, "mu": mu.tolist(), "logvar": logvar.tolist()}
    if out is None:
        print(json.dumps(result))
    else:
        save_json(out, result)
        note(f"wrote {out} (mu and logvar of {len(mu)} inputs)")


def cmd_decode(args, model, digits):
    out = check_output(args.output, (".png", ".npy"))
    if args.latent is None and not args.dims:
        raise UserError("give latent vectors (a JSON list, a .json or .npy file) or --dims UNIT=VALUE ...")
    z = parse_latents(args.latent, model.latent_dim) if args.latent is not None else torch.zeros(1, model.latent_dim)
    for j, v in parse_dims(args.dims, model.latent_dim).items():
        z[:, j] = v
    write_images(out, inference.decode(model, z), f"{len(z)} decoded latent vectors")


def cmd_interpolate(args, model, digits):
    out = check_output(args.output, (".png", ".npy"))
    z1, z2 = endpoint(args.start, model, digits), endpoint(args.end, model, digits)
    path = inference.interpolate(z1, z2, args.steps, slerp=args.slerp)
    write_images(out, inference.decode(model, path), f"{args.steps} steps, {'spherical' if args.slerp else 'linear'}",
                 columns=args.steps)


def cmd_traverse(args, model, digits):
    out = check_output(args.output, (".png", ".npy", ".json"))
    lo, hi = args.range
    if args.steps < 2:
        raise UserError(f"--steps must be at least 2, got {args.steps}")
    values = torch.linspace(lo, hi, args.steps)
    kl: Optional[list[float]] = None
    try:
        x = digits.first(args.kl_digits)
        order, kl = inference.kl_order(model, x)
        note(f"units by KL over {len(x)} test digits (nats): " + ", ".join(f"z{j} {kl[j]:.2f}" for j in order))
    except UserError:
        if args.dim is None:  # the order needs test digits; one named unit does not
            raise
    dims = [args.dim] if args.dim is not None else order[: args.units]
    base = None if args.base is None else endpoint(args.base, model, digits)
    images = inference.traverse(model, dims, values, base)
    if out.suffix.lower() == ".npy":
        write_npy(out, images)
    elif out.suffix.lower() == ".json":
        save_json(out, {"units": dims, "kl": [kl[j] for j in dims] if kl else None, "values": values.tolist(),
                        "images": images.tolist()})
    else:
        from mnist_vae.images import save_grid

        labels = [f"z{j}" + (f" (KL {kl[j]:.2f})" if kl else "") for j in dims]
        save_grid(out, images, labels, f"z_j from {lo:g} to {hi:g} in {args.steps} steps"
                  + (", others 0" if base is None else f", others from {args.base}"))
    note(f"wrote {out} ({len(dims)} units x {args.steps} values)")


def cmd_info(args, model, digits):
    text = json.dumps(inference.describe(model), indent=2, default=str)
    if args.output:
        out = check_output(args.output, (".json",))
        with atomic_path(out) as tmp:
            tmp.write_text(text + "\n")
        note(f"wrote {out}")
    else:
        print(text)


# --------------------------------------------------------------------------- the parser


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
    common.add_argument("--model", default=inference.DEFAULT_MODEL,
                        help="a checkpoint (default models/vae.pt), runs:/<run id>/<model name> or models:/<name>/<version> "
                             "(MLflow; MLFLOW_TRACKING_URI from the environment)")
    common.add_argument("--dequantize", choices=inference.DEQUANTIZE_MODES,
                        help="the dequantization the model was trained with (default: read from dvc.lock / params.yaml "
                             "beside the checkpoint, or from the MLflow model or run)")
    common.add_argument("--data", help="test digits: an mnist.npz (x_test; default data/raw/mnist.npz) or a data/processed/test.npz (x)")

    parser = Parser(prog=PROG, description="Use a trained MNIST VAE: sample, reconstruct, encode, decode, "
                    "interpolate, traverse, info.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Parser)

    def add(name, help_, epilog=None):
        return sub.add_parser(name, help=help_, description=help_, parents=[common], epilog=epilog,
                              formatter_class=argparse.RawDescriptionHelpFormatter)

    p = add("sample", "decode draws of z from the prior, or from a sampler fitted to the training digits' codes, into images",
            "examples: mnist-vae sample -n 64 --seed 0 -o samples.png\n"
            "          mnist-vae sample --sampler gmm -o better.png   (`mnist-vae info` lists the model's samplers)")
    p.add_argument("-n", type=positive_int, default=64, help="how many samples (default 64)")
    p.add_argument("--seed", type=int, default=0, help="seed of the draws (default 0)")
    p.add_argument("--temperature", type=float, default=1.0,
                   help="scale T of the standard prior's standard deviation (of each mixture component's for gmm; default 1; a VampPrior takes only 1)")
    p.add_argument("--sampler", default=samplers.PRIOR,
                   help="prior (default: z ~ p(z)) or a fitted sampler: gmm (recommended: the better digits; "
                        "fitted by the pipeline's sampler stage into models/sampler.pt)")
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


COMMANDS = {"sample": cmd_sample, "reconstruct": cmd_reconstruct, "encode": cmd_encode, "decode": cmd_decode,
            "interpolate": cmd_interpolate, "traverse": cmd_traverse, "info": cmd_info}


def cmd_search(args) -> int:
    from mnist_vae import search

    if args.action == "run":
        return search.run(args.workers, args.threads, args.heartbeat, say=note)
    if args.action == "status":
        return search.status()
    return search.dashboard(args.host, args.port, say=note)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "search":
            return cmd_search(args)
        model = inference.load(args.model, args.dequantize)
        COMMANDS[args.command](args, model, TestDigits(args.data, model))
    except UserError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; nothing was written", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

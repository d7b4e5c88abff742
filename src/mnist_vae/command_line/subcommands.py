"""What each subcommand does with a loaded model and the test digits."""

from __future__ import annotations

import json
from typing import Optional

import numpy as np
import torch

from mnist_vae.api import info, tasks
from mnist_vae.command_line.inputs import endpoint, parse_dims, parse_latents, read_inputs
from mnist_vae.command_line.output import check_output, note, write_images, write_npy
from mnist_vae.errors import UserError
from mnist_vae.files import atomic_path, save_json

GRID_COLUMNS = 16  # reconstruct: pairs of rows of at most this many digits


def cmd_sample(args, model, digits):
    out = check_output(args.output, (".png", ".npy"))
    name, temperature, why = tasks.resolve_sampler(model, args.sampler, args.temperature)
    if why:
        note(why)
    images = tasks.sample(model, args.n, args.seed, temperature, name)
    write_images(out, images, f"{args.n} samples from the sampler {name}, seed {args.seed}, temperature {temperature:g}")


def cmd_reconstruct(args, model, digits):
    out = check_output(args.output, (".png", ".npy"))
    x = read_inputs(args.inputs, model, digits)
    recon = tasks.reconstruct(model, x)
    if out.suffix.lower() == ".npy":
        write_npy(out, recon)
    else:
        from mnist_vae.report.canvas import save_grid

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
    mu, logvar = tasks.encode(model, read_inputs(args.inputs, model, digits))
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
    write_images(out, tasks.decode(model, z), f"{len(z)} decoded latent vectors")


def cmd_interpolate(args, model, digits):
    out = check_output(args.output, (".png", ".npy"))
    z1, z2 = endpoint(args.start, model, digits), endpoint(args.end, model, digits)
    path = tasks.interpolate(z1, z2, args.steps, slerp=args.slerp)
    write_images(out, tasks.decode(model, path), f"{args.steps} steps, {'spherical' if args.slerp else 'linear'}",
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
        order, kl = tasks.kl_order(model, x)
        note(f"units by KL over {len(x)} test digits (nats): " + ", ".join(f"z{j} {kl[j]:.2f}" for j in order))
    except UserError:
        if args.dim is None:  # the order needs test digits; one named unit does not
            raise
    dims = [args.dim] if args.dim is not None else order[: args.units]
    base = None if args.base is None else endpoint(args.base, model, digits)
    images = tasks.traverse(model, dims, values, base)
    if out.suffix.lower() == ".npy":
        write_npy(out, images)
    elif out.suffix.lower() == ".json":
        save_json(out, {"units": dims, "kl": [kl[j] for j in dims] if kl else None, "values": values.tolist(),
                        "images": images.tolist()})
    else:
        from mnist_vae.report.canvas import save_grid

        labels = [f"z{j}" + (f" (KL {kl[j]:.2f})" if kl else "") for j in dims]
        save_grid(out, images, labels, f"z_j from {lo:g} to {hi:g} in {args.steps} steps"
                  + (", others 0" if base is None else f", others from {args.base}"))
    note(f"wrote {out} ({len(dims)} units x {args.steps} values)")


def cmd_info(args, model, digits):
    text = json.dumps(info.describe(model), indent=2, default=str)
    if args.output:
        out = check_output(args.output, (".json",))
        with atomic_path(out) as tmp:
            tmp.write_text(text + "\n")
        note(f"wrote {out}")
    else:
        print(text)


COMMANDS = {"sample": cmd_sample, "reconstruct": cmd_reconstruct, "encode": cmd_encode, "decode": cmd_decode,
            "interpolate": cmd_interpolate, "traverse": cmd_traverse, "info": cmd_info}



"""The default fitted sampler on trained models, against the prior and the decoder's floor: the numbers of the
30-epoch table in docs/samplers.md.

For each model (a vae.pt; its params.yaml beside it gives the dequantization) this script runs the sampler
stage's own fit with the schema's default `sampler` params (samplers.fit: codes mu(x) of the training digits
but the last `sampler.held_out`, a 400-component mixture after 10 EM iterations), timed in CPU seconds
(time.process_time, one thread), and scores as `evaluate` does (quality.sample_quality: 10,000 draws against
the 10,000 test digits in the project classifier's feature space, k = 3, seeds as the pipeline's):

- reconstructions of the test digits (FID);
- the decoder's floor: the decoded mu(x) of the held-out training digits (FID, precision, recall);
- the prior at temperature 1, and the fitted `gmm` at temperature 1 and at each --temperatures value
  (FID, precision, recall, class entropy);
- the test codes' mean log-density under the prior and the mixture.

    OMP_NUM_THREADS=1 python benchmarks/samplers_30_epochs.py --model default=runs/default/vae.pt \
        --model cb=runs/cb/vae.pt [--data data] [--classifier models/classifier.pt] \
        [-o benchmarks/results/samplers_30_epochs.json]

The JSON is rewritten after every model and merged with what the file already holds (a model already there
is skipped unless --force). --table prints the file's results as the Markdown table of the docs.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
import yaml  # noqa: E402

from mnist_vae.data.dequantize import to_pixel_scale  # noqa: E402
from mnist_vae.files import load_npz  # noqa: E402
from mnist_vae.params import QualityParams, SamplerParams  # noqa: E402
from mnist_vae.scoring import classifier, quality  # noqa: E402
from mnist_vae.vae import samplers  # noqa: E402
from mnist_vae.vae.model import load_checkpoint  # noqa: E402
from mnist_vae.vae.samplers import choice  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
import provenance  # noqa: E402

torch.set_num_threads(1)
SEED = 0  # the pipeline's default seed: the fit's, the prior's draws and the fitted sampler's draws


def scores_of(digits, images, f_test, p) -> dict:
    s, coverage = quality.sample_quality(digits, images, f_test, p)
    return {"fid": s["fid"], "precision": s["precision"], "recall": s["recall"], "n": s["n"],
            "class_entropy": coverage["entropy"]}


def run_model(checkpoint: Path, data: Path, digits, f_test, temperatures: list[float]) -> dict:
    params = yaml.safe_load((checkpoint.parent / "params.yaml").read_text()) if (checkpoint.parent / "params.yaml").is_file() else {}
    mode = (params.get("dequantize") or {}).get("mode", "notebook")
    model = load_checkpoint(checkpoint)
    x_train = torch.from_numpy(load_npz(data / "processed/train.npz", ("x",))["x"])
    x_test = torch.from_numpy(load_npz(data / "processed/test.npz", ("x",))["x"])
    p, sp = QualityParams(), SamplerParams()
    g = torch.Generator().manual_seed
    entry: dict = {"checkpoint": str(checkpoint), "config": model.config.model_dump(), "dequantize": mode,
                   "sampler_params": sp.model_dump()}
    cpu = time.process_time()
    state, summary = samplers.fit(model, x_train, sp, SEED, say=lambda line: print(f"  {line}", flush=True))
    entry["fit"] = {"cpu_s": time.process_time() - cpu, **summary}
    fitted = samplers.Fitted(state)
    gmm, prior = samplers.get(model, fitted, "gmm"), samplers.get(model, fitted, samplers.PRIOR)
    recon = to_pixel_scale(quality.reconstruct(model, x_test), mode)
    entry["reconstruction_fid"] = quality.fid(classifier.predict(digits, recon)[0], f_test)
    held = samplers.held_out(fitted, x_train, checkpoint.parent / samplers.FILE_NAME)
    entry["floor"] = scores_of(digits, to_pixel_scale(quality.reconstruct(model, held), mode), f_test, p)
    entry["prior"] = scores_of(digits, quality.generate(model, prior, p.n_samples, mode, g(SEED)), f_test, p)
    entry["gmm"] = {}
    for t in [1.0, *temperatures]:
        cpu = time.process_time()
        images = quality.generate(model, gmm, p.n_samples, mode, g(SEED), t)
        entry["gmm"][f"{t:g}"] = {**scores_of(digits, images, f_test, p), "scoring_cpu_s": time.process_time() - cpu}
    entry["test_code_log_density"] = samplers.code_log_density(model, fitted, x_test, "mu", g(SEED))
    fids = {"prior": entry["prior"]["fid"], "gmm": entry["gmm"]["1"]["fid"]}
    entry["best_at_default_temperature"] = choice.best(fids)
    return entry


def table(results: dict, temperature: str) -> str:
    """The docs' table: one row per model."""
    lines = ["| model | reconstruction FID | decoder floor: FID / precision / recall | prior: FID / precision / recall "
             f"| gmm, T = 1 (the default): FID / precision / recall | gap to the floor | gmm, T = {temperature}: FID / precision / recall "
             "| fit: CPU s |", "|---|---|---|---|---|---|---|---|"]

    def fpr(s):
        return f"{s['fid']:.1f} / {s['precision']:.3f} / {s['recall']:.3f}"

    for name, e in results["models"].items():
        gmm, cold = e["gmm"]["1"], e["gmm"].get(temperature)
        lines.append(f"| {name} | {e['reconstruction_fid']:.1f} | {fpr(e['floor'])} | {fpr(e['prior'])} | {fpr(gmm)} "
                     f"| {gmm['fid'] - e['floor']['fid']:+.1f} | {fpr(cold) if cold else ''} "
                     f"| {e['fit']['samplers']['gmm']['fit_cpu_time']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", default=[], help="name=path/to/vae.pt (repeatable)")
    parser.add_argument("--data", type=Path, default=Path("data"), help="holds raw/mnist.npz and processed/{train,test}.npz")
    parser.add_argument("--classifier", type=Path, default=Path("models/classifier.pt"))
    parser.add_argument("--temperatures", type=float, nargs="*", default=[0.95], help="besides 1")
    parser.add_argument("--force", action="store_true", help="rerun models already in the output")
    parser.add_argument("--table", action="store_true", help="only print the output's table")
    parser.add_argument("-o", "--output", type=Path, default=Path("benchmarks/results/samplers_30_epochs.json"))
    args = parser.parse_args()
    results = json.loads(args.output.read_text()) if args.output.exists() else {}
    results.setdefault("models", {})
    if args.table:
        print(table(results, f"{args.temperatures[0]:g}"))
        return
    results.pop("machine", None)
    results = {"provenance": provenance.block(), **{k: v for k, v in results.items() if k != "provenance"}}
    digits = classifier.load(args.classifier)
    f_test, _ = classifier.predict(digits, classifier.scale_pixels(load_npz(args.data / "raw/mnist.npz", ("x_test",))["x_test"]))
    for spec in args.model:
        name, path = spec.split("=", 1)
        if name in results["models"] and not args.force:
            continue
        print(f"{name}: {path}", flush=True)
        results["models"][name] = run_model(Path(path), args.data, digits, f_test, args.temperatures)
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(results, indent=1) + "\n")
        e = results["models"][name]
        print(f"{name}: floor {e['floor']['fid']:.1f}, prior {e['prior']['fid']:.1f}, gmm {e['gmm']['1']['fid']:.1f}, "
              f"fit {e['fit']['cpu_s']:.0f}s of CPU", flush=True)
    print(table(results, f"{args.temperatures[0]:g}"))


if __name__ == "__main__":
    main()

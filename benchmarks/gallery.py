"""The figure gallery's broken (and small healthy) examples: short real trainings with settings that break a
VAE, their figures copied into docs/gallery/ and their numbers into benchmarks/results/gallery.json.

Each run is this project's stage scripts (train, sampler, evaluate, render) in a scratch folder with
params.yaml's defaults plus the run's overrides (RUNS below) and COMMON; the data and the digit
classifier are the project's own (data/, models/classifier.pt: run `make repro`, or at least
`dvc repro dequantize classifier`, first). One run at a time, with the threads OMP_NUM_THREADS allows.

    OMP_NUM_THREADS=1 python benchmarks/gallery.py [--runs beta20 collapse ...] [--keep DIR]
    python benchmarks/gallery.py --baseline [--project DIR]   # the healthy column: the committed baseline's figures

`--baseline` trains nothing: it copies the figures of the committed baseline (reports/figures/ of a project
after `make repro`, whose numbers are metrics/headline.json and benchmarks/results/baseline.json) as
docs/gallery/baseline-*.png, after checking that they are the very files dvc.lock records.

A figure over 150 kB is scaled down until it fits (the site ships them).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
import provenance  # noqa: E402

ROOT = provenance.ROOT
GALLERY = ROOT / "docs" / "gallery"
LIMIT = 150_000  # bytes per image in docs/gallery
COMMON = {"train.epochs": 10, "evaluate.iw_samples": 10}
RUNS = {  # name -> (overrides, figures kept: those docs/figures.md shows; '..._epoch_': the first and last frame)
    "healthy": ({}, ["progress/samples_epoch_", "progress/reconstructions_epoch_"]),
    "beta20": ({"train.beta": 20.0}, ["samples", "reconstructions", "latent_space", "class_histogram"]),
    "collapse": ({"model.likelihood": "gaussian", "model.gaussian_sigma": 10.0},
                 ["samples", "samples_gmm", "reconstructions", "interpolation", "latent_space", "training_curves",
                  "reparameterization", "class_histogram"]),
    "latent2": ({"model.latent_dim": 2}, ["manifold", "latent_space"]),
    "vamp": ({"model.prior": "vamp"}, ["pseudo_inputs"]),
}
STAGES = ["train", "sampler", "evaluate", "render"]
BASELINE = ["samples", "samples_prior_vs_gmm", "reconstructions", "interpolation", "latent_space", "reparameterization",
            "training_curves", "samples_by_class", "class_histogram"]  # the committed baseline's figures shown


def with_overrides(params: dict, overrides: dict) -> dict:
    for key, value in overrides.items():
        section, name = key.split(".", 1)
        params[section][name] = value
    return params


def shrink(src: Path, dst: Path) -> None:
    """Copy a PNG, scaled down (and to a palette) until it is under LIMIT bytes."""
    shutil.copyfile(src, dst)
    image, scale = Image.open(src), 1.0
    while dst.stat().st_size > LIMIT:
        scale *= 0.85
        size = (round(image.width * scale), round(image.height * scale))
        small = image.convert("RGB").resize(size, Image.LANCZOS).quantize(colors=64)
        small.save(dst, optimize=True)


def numbers(folder: Path) -> dict:
    ev = json.loads((folder / "metrics" / "eval.json").read_text())
    q = ev["quality"]
    out = {
        "test_nelbo": ev["test"]["nelbo"], "test_kl": ev["test"]["kl"],
        "active_units": ev["posterior"]["active_units"], "mutual_info": ev["posterior"]["mutual_info"],
        "sample_fid": q["samples"]["fid"], "sample_precision": q["samples"]["precision"],
        "sample_recall": q["samples"]["recall"], "class_entropy": q["class_coverage"]["entropy"],
        "reconstruction_fid": q["reconstructions"]["fid"], "reconstruction_accuracy": q["reconstructions"]["accuracy"],
        "latent_dim": len(ev["posterior"]["kl_per_dim"]),
    }
    if "gmm" in q.get("samplers", {}):
        out["gmm_sample_fid"] = q["samplers"]["gmm"]["samples"]["fid"]
    return out


def run(name: str, scratch: Path) -> dict:
    overrides, keep = RUNS[name]
    folder = scratch / name
    shutil.rmtree(folder, ignore_errors=True)
    (folder / "models").mkdir(parents=True)
    (folder / "data").symlink_to(ROOT / "data")
    shutil.copy2(ROOT / "models" / "classifier.pt", folder / "models" / "classifier.pt")
    params = with_overrides(yaml.safe_load((ROOT / "params.yaml").read_text()), {**COMMON, **overrides})
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    start = time.time()
    for stage in STAGES:
        with open(folder / f"{stage}.log", "w") as log:
            subprocess.run([sys.executable, str(ROOT / "stages" / f"{stage}.py")], cwd=folder, stdout=log,
                           stderr=subprocess.STDOUT, check=True)
    GALLERY.mkdir(parents=True, exist_ok=True)
    copied = []
    for figure in keep:
        if figure.endswith("_epoch_"):  # the progress frames: the first and the last
            frames = sorted((folder / "reports").glob(f"{figure}*.png"))
            sources = [frames[0], frames[-1]]
        else:
            sources = [folder / "reports" / "figures" / f"{figure}.png"]
        for src in sources:
            dst = GALLERY / f"{name}-{src.name}"
            shrink(src, dst)
            copied.append(dst.relative_to(ROOT).as_posix())
    return {"provenance": provenance.block(), "overrides": {**COMMON, **overrides},
            "seconds": round(time.time() - start), "figures": copied, **numbers(folder)}


def copy_baseline(project: Path) -> None:
    """The committed baseline's figures from `project`'s reports/figures, checked against dvc.lock's record."""
    lock = yaml.safe_load((ROOT / "dvc.lock").read_text())["stages"]["render"]["outs"]
    digest = next(o["md5"] for o in lock if o["path"] == "reports/figures").removesuffix(".dir")
    manifest = project / ".dvc" / "cache" / "files" / "md5" / digest[:2] / f"{digest[2:]}.dir"
    figures = project / "reports" / "figures"
    if manifest.is_file():
        for entry in json.loads(manifest.read_text()):
            if hashlib.md5((figures / entry["relpath"]).read_bytes()).hexdigest() != entry["md5"]:
                sys.exit(f"gallery: {figures / entry['relpath']} is not the committed baseline's (dvc.lock)")
    else:
        sys.exit(f"gallery: {manifest} is missing: run `make repro` in {project} first")
    GALLERY.mkdir(parents=True, exist_ok=True)
    for figure in BASELINE:
        shrink(figures / f"{figure}.png", GALLERY / f"baseline-{figure}.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="+", default=list(RUNS), choices=list(RUNS))
    parser.add_argument("--keep", type=Path, help="scratch folder to keep the runs in (default: a temporary one)")
    parser.add_argument("--baseline", action="store_true", help="only copy the committed baseline's figures")
    parser.add_argument("--project", type=Path, default=ROOT, help="--baseline: the project to copy them from")
    args = parser.parse_args()
    if args.baseline:
        return copy_baseline(args.project)
    out_path = provenance.RESULTS / "gallery.json"
    results = json.loads(out_path.read_text()) if out_path.exists() else {"runs": {}}
    scratch = args.keep or Path(tempfile.mkdtemp(prefix="gallery-"))
    for name in args.runs:
        print(f"gallery: {name} ...", flush=True)
        results["runs"][name] = run(name, scratch)
        print(json.dumps(results["runs"][name]), flush=True)
        provenance.write("gallery", {"runs": results["runs"]}, results["runs"][name]["provenance"])
    if not args.keep:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()

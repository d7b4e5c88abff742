"""The committed baseline's numbers that metrics/headline.json leaves out, for the documentation.

Run after `make repro` of the committed params, in that project: it checks that the models it made are the
very bytes dvc.lock records (so the numbers are the committed baseline's, not a near reproduction), then
copies from metrics/eval.json, sampler.json, train.json and classifier.json the numbers the pages cite
(the standard error of -log p(x), the real-digit floor of FID, class entropies, the test codes'
log-density, the sampler's fit, and each stage's time in that run) into benchmarks/results/baseline.json.

    python benchmarks/baseline_numbers.py [--project DIR]
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).parent))
import provenance  # noqa: E402

MODELS = ["models/vae.pt", "models/sampler.pt", "models/classifier.pt", "models/best_sampler.json"]


def locked_md5s(lock: Path) -> dict[str, str]:
    out = {}
    for stage in yaml.safe_load(lock.read_text())["stages"].values():
        for entry in stage.get("outs", []):
            out[entry["path"]] = entry["md5"]
    return out


def mismatched_model(project: Path, lock: Path) -> str | None:
    """The first of MODELS in project whose bytes are not those lock records, as one line; None if all are."""
    locked = locked_md5s(lock)
    for path in MODELS:
        md5 = hashlib.md5((project / path).read_bytes()).hexdigest()
        if md5 != locked[path]:
            return f"{path} is not the one {lock} records ({md5} != {locked[path]})"
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path, default=Path("."))
    args = parser.parse_args()
    if problem := mismatched_model(args.project, provenance.ROOT / "dvc.lock"):
        sys.exit(f"baseline_numbers: not the committed baseline: {problem}")
    out, when = numbers(args.project)
    out = {"models_match_dvc_lock": True, **out}
    measured = measured_by("make repro, then python benchmarks/baseline_numbers.py", args.project, when)
    print(f"written to {provenance.write('baseline', out, measured)}")


def measured_by(command: str, project: Path, when: datetime.datetime) -> dict:
    """The provenance of numbers a project's own run measured (at `when`, its eval.json's time) and this reads."""
    return {**provenance.block(command), "date": when.strftime("%Y-%m-%d %H:%M UTC"), "load_average": None,
            "commit": provenance.commit(project)}


def numbers(project: Path) -> tuple[dict, datetime.datetime]:
    """The numbers the pages cite from a project's metrics, and when its evaluate wrote them."""

    def load(name):
        return json.loads((project / "metrics" / f"{name}.json").read_text())

    ev, sampler, train, clf = load("eval"), load("sampler"), load("train"), load("classifier")
    q = ev["quality"]
    when = datetime.datetime.fromtimestamp((project / "metrics" / "eval.json").stat().st_mtime, datetime.timezone.utc)
    out = {
        "test_nll_iwae_se": ev["test"]["iw_nll_se"],
        "iw_samples": ev["likelihood"]["iw_samples"],
        "mutual_info": ev["posterior"]["mutual_info"],
        "latent_dim": len(ev["posterior"]["kl_per_dim"]),
        "reference": {k: q["reference"][k] for k in ("fid", "precision", "recall")},
        "prior": {**{k: q["samples"][k] for k in ("fid", "precision", "recall")},
                  "class_entropy": q["class_coverage"]["entropy"],
                  "mean_confidence": q["class_coverage"]["mean_confidence"],
                  "test_code_log_density": q["code_log_density"]["prior"]},
        "gmm": {**{k: q["samplers"]["gmm"]["samples"][k] for k in ("fid", "precision", "recall")},
                "temperature": q["samplers"]["gmm"]["temperature"],
                "class_entropy": q["samplers"]["gmm"]["class_coverage"]["entropy"],
                "mean_confidence": q["samplers"]["gmm"]["class_coverage"]["mean_confidence"],
                "test_code_log_density": q["code_log_density"]["gmm"],
                **{k: sampler["samplers"]["gmm"][k] for k in ("components", "n_iter", "fit_time", "fit_cpu_time")},
                "n_codes": sampler["n_codes"], "held_out": sampler["held_out"], "fit_on": sampler["fit_on"]},
        "floor": {k: q["floor"][k] for k in ("fid", "precision", "recall", "n")},
        "best": {k: q["best"][k] for k in ("sampler", "temperature", "fid")},
        "seconds": {"classifier": clf["train_time"], "classifier_threads": clf["threads"],
                    "train": train["total_time"], "train_mean_epoch": train["mean_epoch_time"],
                    "sampler": sampler["stage_time"], "evaluate": ev["eval_time"] + ev["quality_time"]},
    }
    return out, when


if __name__ == "__main__":
    main()

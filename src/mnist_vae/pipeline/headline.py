"""The headline: the dozen numbers a user compares between results, in one small file kept in git.

metrics/headline.json is the only file under `metrics:` in dvc.yaml, so `dvc metrics show/diff` and
`dvc exp show` print these columns and no others; it is committed with dvc.lock (`cache: false`), so a
fresh clone compares its reproduction with the committed numbers. Every number is copied unchanged
from a file another stage wrote (metrics/eval.json, ...), where the detailed numbers stay; `track`
logs both to MLflow and links the headline to the logged model (the experiment's Models tab).

To add a number, add one line to HEADLINE; a number from a file not listed yet also needs that file
among the `headline` stage's deps in dvc.yaml (tests/test_headline.py checks that they agree).
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from mnist_vae.errors import FileProblem
from mnist_vae.files import load_json

TRAIN, EVAL, CLASSIFIER = "metrics/train.json", "metrics/eval.json", "metrics/classifier.json"


class Number(NamedTuple):
    file: str              # the JSON file a stage wrote
    key: str               # dotted path to the number in it
    optional: bool = False  # absent under some params (then left out of the headline)


HEADLINE: dict[str, Number] = {
    "test_nelbo": Number(EVAL, "test.nelbo"),                # -ELBO on the test set (nats per digit)
    "test_nll_iwae": Number(EVAL, "test.iw_nll"),            # -log p(x), IWAE estimate with evaluate.iw_samples
    "test_bpd": Number(EVAL, "test.bpd", optional=True),     # bits per dimension (dequantize.mode uniform only)
    "active_units": Number(EVAL, "posterior.active_units"),
    "sample_fid": Number(EVAL, "quality.samples.fid"),       # prior samples vs test digits, classifier features
    # the best sampler's samples: the lowest FID among the prior and the fitted samplers (docs/samplers.md)
    "best_sample_fid": Number(EVAL, "quality.best.fid"),
    "best_sample_precision": Number(EVAL, "quality.best.precision"),
    "best_sample_recall": Number(EVAL, "quality.best.recall"),
    "decoder_floor_fid": Number(EVAL, "quality.floor.fid"),  # decoded mu(x) of the held-out training digits
    "reconstruction_fid": Number(EVAL, "quality.reconstructions.fid"),
    "reconstruction_accuracy": Number(EVAL, "quality.reconstructions.accuracy"),
    "probe_accuracy": Number(EVAL, "quality.probe.test_accuracy"),  # linear probe on the encodings
    "train_time": Number(TRAIN, "total_time"),               # seconds
    "classifier_accuracy": Number(CLASSIFIER, "test_accuracy"),  # the feature extractor behind the FIDs
}


def files() -> list[str]:
    """The files the headline is read from (the headline stage's deps), in a fixed order."""
    return sorted({number.file for number in HEADLINE.values()})


def collect(root: Path = Path(".")) -> dict[str, float]:
    """The headline numbers, read from the files under `root`; a missing file or number is one line."""
    trees = {name: load_json(root / name) for name in files()}
    out = {}
    for name, number in HEADLINE.items():
        value = trees[number.file]
        for part in number.key.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if value is None and number.optional:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise FileProblem(root / number.file, "unreadable", f"{number.file} has no number at {number.key} (for {name})")
        out[name] = value
    return out

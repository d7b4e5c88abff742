"""What the MLflow UI shows of a result besides its numbers: a name a person can tell apart, a description of
how it differs from the committed baseline, metric names in the sections the UI groups by (the part before
the last `/`), and the figures as images the UI can put side by side.

The baseline is the last commit's params.yaml and metrics/headline.json (what `dvc params diff` and
`dvc metrics diff` compare the workspace with), read with git.
"""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

from mnist_vae.params import RESULT_SECTIONS, flatten_tree
from mnist_vae.report import progress

NAME_LENGTH = 80  # characters of a run name; the changed params beyond are counted, not listed

# --------------------------------------------------------------------------- metric names

# the sections of a metric file's numbers: (file prefix, pattern of the dotted key, name); first match wins,
# anything else is <prefix>/<key with / for .>
SECTIONS = [
    ("eval", r"test\.train_slice_(.+)", r"train_slice/\1"),
    ("eval", r"test\.(.+)", r"test/\1"),
    ("eval", r"likelihood\.(.+)", r"test/\1"),
    ("eval", r"train_slice\.(.+)", r"test/train_slice_\1"),
    ("eval", r"posterior\.(.+)", r"representation/\1"),
    ("eval", r"latent\.(.+)", r"representation/latent_\1"),
    ("eval", r"vamp\.(.+)", r"representation/vamp_\1"),
    ("eval", r"quality\.probe\.(.+)", r"representation/probe_\1"),
    ("eval", r"quality\.(?:samples|class_coverage)\.(.+)", r"samples/prior/\1"),
    ("eval", r"quality\.samplers\.([^.]+)\.(?:samples|class_coverage)\.(.+)", r"samples/\1/\2"),
    ("eval", r"quality\.samplers\.([^.]+)\.(temperature|floor_gap_fid)", r"samples/\1/\2"),
    ("eval", r"quality\.best\.(.+)", r"samples/best/\1"),
    ("eval", r"quality\.floor\.(.+)", r"floor/\1"),
    ("eval", r"quality\.code_log_density\.n", r"samples/test_codes"),
    ("eval", r"quality\.code_log_density\.([^.]+)", r"samples/\1/test_code_log_density"),
    ("eval", r"quality\.(reconstructions|reference)\.(.+)", r"\1/\2"),
    ("eval", r"quality\.(k|n_test)", r"samples/\1"),
    ("eval", r"(eval|quality)_time", r"time/\1"),
    ("train", r"total_time", r"time/train"),
    ("train", r"mean_epoch_time", r"time/train_mean_epoch"),
    ("train", r"(.+)", r"training/\1"),  # (the keys the curves have are not logged again: tracking.py)
    ("classifier", r"(.+)", r"classifier/\1"),
    ("sampler", r"samplers\.([^.]+)\.(.+)", r"samplers/\1/\2"),
    ("sampler", r"(encode|stage|stage_cpu)_time", r"time/sampler_\1"),
    ("sampler", r"(.+)", r"samplers/\1"),
]
CURVES = "training"  # the section of the per-epoch curves (the headline numbers keep their names: no section)


def metric_name(prefix: str, key: str) -> str:
    """The MLflow name of the number at dotted `key` of the metric file `prefix` (eval, train, ...)."""
    for file, pattern, name in SECTIONS:
        if file == prefix and re.fullmatch(pattern, key):
            return re.sub(f"^{pattern}$", name, key)
    return f"{prefix}/{key.replace('.', '/')}"


# --------------------------------------------------------------------------- images


def image_key(path: Path) -> tuple[str, Optional[int]]:
    """The MLflow image key of a figure or frame render wrote, and the frame's epoch (None for a figure):
    samples.png -> samples/prior, samples_gmm.png -> samples/gmm, samples_prior_vs_gmm.png ->
    samples/prior_vs_gmm, reports/progress/samples_epoch_003.png -> progress/samples at step 3, any other
    figure -> its name."""
    frame = progress.parse(path.name)
    if frame:
        return f"progress/{frame[0]}", frame[1]
    stem = path.stem
    if stem == "samples":
        return "samples/prior", None
    if stem.startswith("samples_"):
        return "samples/" + stem.removeprefix("samples_"), None
    return stem, None


# --------------------------------------------------------------------------- the baseline


@dataclass
class Baseline:
    """The commit a result is compared with, and what differs from it."""

    commit: str = ""            # short hash ('' outside a git checkout)
    branch: str = ""
    params: dict[str, tuple[Any, Any]] = field(default_factory=dict)    # key -> (committed, this result's)
    headline: dict[str, tuple[Any, Any]] = field(default_factory=dict)  # name -> (committed, this result's)


def git(root: Path, *args: str) -> Optional[str]:
    try:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None


def baseline(root: Path, params: dict, headline: dict) -> Baseline:
    """What differs between this result (its params as params.yaml holds them, its headline numbers) and the
    last commit's."""
    commit = (git(root, "rev-parse", "--short", "HEAD") or "").strip()
    if not commit:
        return Baseline()
    branch = (git(root, "rev-parse", "--abbrev-ref", "HEAD") or "").strip()
    old_params = yaml.safe_load(git(root, "show", "HEAD:params.yaml") or "") or {}
    old_headline = json.loads(git(root, "show", "HEAD:metrics/headline.json") or "{}")
    return Baseline(commit, "" if branch == "HEAD" else branch,
                    changed(flat_result(old_params), flat_result(params)), changed(old_headline, headline))


def flat_result(params: dict) -> dict[str, Any]:
    """The params a result depends on (every section but `search`), as dotted keys."""
    return flatten_tree({k: v for k, v in params.items() if k in RESULT_SECTIONS or not isinstance(v, dict)})


def changed(old: dict, new: dict) -> dict[str, tuple[Any, Any]]:
    """key -> (old, new) for the keys whose values differ (None where one side lacks the key)."""
    return {k: (old.get(k), new.get(k)) for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)}


# --------------------------------------------------------------------------- name and description


def run_name(experiment: Optional[str], base: Baseline) -> str:
    """The DVC experiment's name; else the branch and commit, and the params this result changed
    ('main@1a2b3c4 train.beta=4'), or 'workspace' outside a checkout."""
    if experiment:
        return experiment
    if not base.commit:
        return "workspace"
    name = f"{base.branch or 'detached'}@{base.commit}"
    shown = []
    for key, (_, new) in base.params.items():
        if len(" ".join([name, *shown, f"{key}={new}"])) > NAME_LENGTH:
            return " ".join([name, *shown, f"+{len(base.params) - len(shown)} more"])
        shown.append(f"{key}={new}")
    return " ".join([name, *shown])


def description(model: str, base: Baseline) -> str:
    """The run page's note (Markdown): first a line of what changed (the part the page shows before "Show
    more"), then the params this result changed from the commit, and its headline numbers beside the commit's."""
    if not base.commit:
        return f"**{model}**, outside a git checkout: no committed baseline to compare with."
    where = f"{base.branch or 'a detached HEAD'} at {base.commit}"
    summary = ", ".join(f"`{k}` {_cell(old)} → {_cell(new)}" for k, (old, new) in base.params.items())
    lines = [f"**Changed from {where}:** {summary or 'no param (the commit&#39;s params)'}. Model **{model}**.", ""]
    if base.params:
        lines += ["Params changed from the commit (`dvc params diff`):", "", "| param | commit | this run |",
                  "|---|---|---|", *(f"| {k} | {_cell(old)} | {_cell(new)} |" for k, (old, new) in base.params.items())]
    else:
        lines.append("The commit's params (`dvc params diff`: no change).")
    lines += ["", "Headline numbers beside the commit's (`dvc metrics diff`):", "",
              "| number | commit | this run | change |", "|---|---|---|---|"]
    lines += [f"| {k} | {_cell(old)} | {_cell(new)} | {_change(old, new)} |" for k, (old, new) in base.headline.items()]
    if not base.headline:
        lines.append("| (all equal) | | | |")
    return "\n".join(lines) + "\n"


def _cell(value) -> str:
    if value is None:
        return "-"
    return f"{value:.6g}" if isinstance(value, float) and len(str(value)) > 10 else str(value)


def _change(old, new) -> str:
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (old, new))
    return f"{new - old:+.4g}" if numbers else ""

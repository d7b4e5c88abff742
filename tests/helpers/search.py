"""Searches in tests: a small search spec, a project folder holding it, the `mnist-vae search` command run
there, and the study's trials and DVC experiments read back."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml

from helpers.pipeline import BIN, REPO, sh

SMALL_SEARCH = {"study": "s", "objectives": [{"metric": "eval.test.iw_nll", "direction": "minimize"}],
                "algorithm": "grid", "n_trials": 2, "space": {"train.beta": [0.5, 2.0]}}


def project_files(dest: Path, **search) -> Path:
    """params.yaml (the repository's, with `search` changed) and dvc.yaml in an empty folder."""
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "dvc.yaml", dest / "dvc.yaml")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["search"] = {**SMALL_SEARCH, **search}
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return dest


def search_cli(root: Path, *args: str, check: bool = True, timeout: float = 1800, **extra) -> subprocess.CompletedProcess:
    return sh(str(BIN / "mnist-vae"), "search", *args, cwd=root, check=check, timeout=timeout,
              OMP_NUM_THREADS="1", **extra)


def study_trials(root: Path, name: str, url: str | None = None) -> list:
    import optuna

    study = optuna.load_study(study_name=name, storage=url or f"sqlite:///{root / 'optuna.db'}")
    return study.get_trials()


def exp_names(root: Path) -> list[str]:
    return sorted(sh("dvc", "exp", "list", "--name-only", cwd=root).stdout.split())

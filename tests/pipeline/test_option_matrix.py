"""The option matrix: every documented value of every option that changes what a stage computes, and the
pairs most likely to interact, each run through all nine stages by the stage scripts themselves, on the
fixture's real digits with tiny sizes. `download` and `classifier` read no param the matrix varies, so
they run once and every row starts from their outputs; each row runs the other seven.

For every combination each stage must exit 0 and write the outputs dvc.yaml declares for it, `track` must
leave one FINISHED MLflow run, and the numbers must obey what holds for every model: the IWAE estimate of
-log p(x) at most the -ELBO of the same draws, FIDs finite and non-negative, precision and recall in
[0, 1], each fitted sampler's test-code log-density above the prior's.

A new option gets a row in MATRIX in the same change (docs/development.md). The combinations run two at a
time (one thread each), so the whole matrix takes a few minutes on 2 cores.
"""

from __future__ import annotations

import concurrent.futures
import copy
import hashlib
import json
import math
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from helpers.digits import FIXTURE_DIGITS as FIXTURE
from helpers.digits import REPO
from mnist_vae.params import Params

pytestmark = pytest.mark.slow

STAGES = ["download", "dequantize", "classifier", "train", "sampler", "evaluate", "headline", "render", "track"]
PARALLEL = 2  # combinations at a time, one thread each

# tiny sizes: every stage does all its work, on 1000 training and 200 test digits, in seconds
TINY = {
    "model": {"hidden_dims": [32], "latent_dim": 4, "conv_channels": [4, 8], "vamp_components": 10},
    "train": {"epochs": 2, "batch_size": 100},
    "evaluate": {"iw_samples": 8, "batch_size": 50, "train_slice": 100, "mi_examples": 50},
    "render": {"samples_grid": 3, "interpolation_rows": 2, "interpolation_steps": 3, "reconstructions": 3,
               "latent_points": 100, "manifold_grid": 4, "class_sheet": 3},
    "classifier": {"channels": [4, 8], "feature_dim": 16, "epochs": 1, "batch_size": 64},
    "quality": {"n_samples": 200, "n_reference": 200, "probe_max_iter": 20},
    "sampler": {"gmm_components": 3, "fit_examples": 0, "held_out": 200},
    "tracking": {"experiment": "matrix"},
}

# one row per combination: dotted key -> value over TINY. Every value of every option that changes what a
# stage computes appears at least once; the pairs below the first block are the likely interactions.
MATRIX: dict[str, dict] = {
    "default": {},
    "uniform-gaussian": {"dequantize.mode": "uniform", "model.likelihood": "gaussian"},
    "none-continuous-bernoulli": {"dequantize.mode": "none", "model.likelihood": "continuous_bernoulli"},
    "binarize-dynamic": {"dequantize.mode": "binarize", "train.dynamic_binarization": True},
    "gaussian-learned-sigma": {"model.likelihood": "gaussian", "model.gaussian_sigma": "learned"},
    "tanh-latent-2": {"model.activation": "tanh", "model.latent_dim": 2},
    "conv": {"model.architecture": "conv"},
    "iwae": {"train.objective": "iwae", "train.iw_samples": 3},
    "beta-warmup-burda": {"train.beta": 4.0, "train.kl_warmup_epochs": 1, "train.lr_schedule": "burda"},
    "latent-1-fit-on-draws": {"model.latent_dim": 1, "sampler.fit_on": "draws"},
    "no-fitted-sampler": {"sampler.names": []},
    # the fitted samplers' temperature (the prior stays at 1: a VampPrior takes no other), and a smaller fit
    "sampler-temperature": {"sampler.temperature": 0.9},
    "vamp-sampler-temperature": {"model.prior": "vamp", "sampler.temperature": 1.2},
    "held-out-fit-examples": {"sampler.held_out": 500, "sampler.fit_examples": 300, "sampler.gmm_max_iter": 1},
    "outputs-off": {"tracking.log_model": False, "render.samples_grid": 0, "render.interpolation_rows": 0, "render.reconstructions": 0,
                   "render.latent_points": 0, "render.manifold_grid": 0, "render.histograms": False,
                   "render.curves": False, "render.explorer": False, "render.class_sheet": 0,
                   "render.class_histogram": False, "render.progress_every": 0},
    # the VampPrior with each architecture and likelihood, and with IWAE
    "vamp-mlp": {"model.prior": "vamp"},
    "vamp-conv": {"model.prior": "vamp", "model.architecture": "conv"},
    "vamp-continuous-bernoulli": {"model.prior": "vamp", "model.likelihood": "continuous_bernoulli"},
    "vamp-gaussian": {"model.prior": "vamp", "model.likelihood": "gaussian", "dequantize.mode": "uniform"},
    "vamp-iwae": {"model.prior": "vamp", "train.objective": "iwae", "train.iw_samples": 3},
    # bf16 with each architecture
    "bf16-mlp": {"train.precision": "bf16"},
    "bf16-conv": {"train.precision": "bf16", "model.architecture": "conv"},
    "conv-continuous-bernoulli": {"model.architecture": "conv", "model.likelihood": "continuous_bernoulli"},
}


def fixture_digests() -> dict[str, str]:
    with np.load(FIXTURE) as f:
        return {k: hashlib.sha256(np.ascontiguousarray(f[k]).tobytes()).hexdigest()
                for k in ("x_train", "y_train", "x_test", "y_test")}


def params_for(overrides: dict) -> dict:
    """The schema's defaults, TINY, the fixture digits as the data, then the row's overrides."""
    raw = Params().model_dump()
    for section, values in TINY.items():
        raw[section].update(copy.deepcopy(values))
    raw["data"].update({"source": "file", "path": str(FIXTURE), "sha256": fixture_digests()})
    for key, value in overrides.items():
        section, leaf = key.split(".")
        raw[section][leaf] = value
    Params.model_validate(raw)  # a row the schema refuses is a mistake in this table, not in a stage
    return raw


def declared_outputs() -> dict[str, list[str]]:
    """Each stage's outputs as dvc.yaml declares them (outs and metrics)."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    return {name: [next(iter(o)) if isinstance(o, dict) else o for kind in ("outs", "metrics") for o in s.get(kind, [])]
            for name, s in stages.items()}


SHARED = {"download": ["data/raw/mnist.npz"], "classifier": ["models/classifier.pt", "metrics/classifier.json"]}


def run_stages(root: Path, stages: list[str]) -> list[dict]:
    """The stage scripts in order in `root` (its params.yaml); stops at the first that fails. What each
    did, and its time."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "MLFLOW_DISABLE_TELEMETRY": "true",
           "DVC_ROOT": str(root), "PYTHONUNBUFFERED": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)  # the row's own store, root/mlflow.db
    env.pop("DVC_EXP_NAME", None)
    done = []
    for stage in stages:
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, str(REPO / "stages" / f"{stage}.py")], cwd=root, env=env,
                              capture_output=True, text=True, timeout=600)
        done.append({"stage": stage, "code": proc.returncode, "seconds": time.perf_counter() - start,
                     "output": (proc.stdout + proc.stderr)[-3000:]})
        if proc.returncode != 0:
            break
    return done


def run_row(name: str, root: Path, shared: Path) -> list[dict]:
    """One row: the shared stages' outputs copied from `shared`, then every other stage."""
    root.mkdir(parents=True)
    (root / "params.yaml").write_text(yaml.safe_dump(params_for(MATRIX[name]), sort_keys=False))
    for out in (o for outs in SHARED.values() for o in outs):
        (root / out).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(shared / out, root / out)
    return run_stages(root, [s for s in STAGES if s not in SHARED])


@pytest.fixture(scope="module")
def matrix_runs(request, tmp_path_factory):
    """The rows this session selected, started PARALLEL at a time after the shared stages ran once; each
    test waits for its own row."""
    wanted = [item.callspec.params["name"] for item in request.session.items
              if item.path == Path(__file__) and hasattr(item, "callspec") and "name" in item.callspec.params]
    base = tmp_path_factory.mktemp("matrix")
    shared = base / "shared"
    shared.mkdir()
    (shared / "params.yaml").write_text(yaml.safe_dump(params_for({}), sort_keys=False))
    ran = run_stages(shared, list(SHARED))
    assert [s["code"] for s in ran] == [0] * len(SHARED), ran[-1]["output"]
    pool = concurrent.futures.ThreadPoolExecutor(PARALLEL)
    yield {name: (base / name, pool.submit(run_row, name, base / name, shared)) for name in dict.fromkeys(wanted)}
    pool.shutdown(wait=True, cancel_futures=True)


def finite_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@pytest.mark.parametrize("name", list(MATRIX))
def test_every_stage_runs_and_the_numbers_hold(matrix_runs, name):
    root, running = matrix_runs[name]
    ran = running.result()
    failed = [s for s in ran if s["code"] != 0]
    assert not failed, f"stage {failed[0]['stage']} exited {failed[0]['code']}:\n{failed[0]['output']}"
    assert [s["stage"] for s in ran] == [s for s in STAGES if s not in SHARED]
    for stage, outputs in declared_outputs().items():
        for out in outputs:
            assert (root / out).exists(), f"{stage} did not write {out}"
    figures = sorted(p.name for p in (root / "reports" / "figures").glob("*.png"))
    if MATRIX[name].get("render.curves", True):
        assert "training_curves.png" in figures, figures
    frames = sorted(p.name for p in (root / "reports" / "progress").glob("*.png"))
    every = MATRIX[name].get("render.progress_every", Params().render.progress_every)
    epochs = params_for(MATRIX[name])["train"]["epochs"]
    assert len(frames) == 2 * len([e for e in range(epochs + 1) if every and (e % every == 0 or e == epochs)]), frames

    ev = json.loads((root / "metrics" / "eval.json").read_text())
    test = ev["test"]
    assert finite_number(test["iw_nll"]) and finite_number(test["nelbo"])
    # log of the mean of the K weights >= the mean of their logs (Jensen), on the same draws
    assert test["iw_nll"] <= test["nelbo"] + 1e-6 * abs(test["nelbo"]), test
    q = ev["quality"]
    scored = {"prior samples": q["samples"], "reconstructions": q["reconstructions"], "reference": q["reference"],
              **{f"sampler {n}": s["samples"] for n, s in q["samplers"].items()}}
    for what, scores in scored.items():
        assert finite_number(scores["fid"]) and scores["fid"] >= 0, (what, scores)
        for key in ("precision", "recall"):
            if key in scores:
                assert 0 <= scores[key] <= 1, (what, scores)
    sampler_params = Params.model_validate(params_for(MATRIX[name])).sampler
    fitted = sampler_params.names
    assert sorted(q["samplers"]) == sorted(fitted)
    density = q["code_log_density"]
    for sampler in fitted:
        assert density[sampler] > density["prior"], density
        assert q["samplers"][sampler]["temperature"] == sampler_params.temperature
    # the floor: the decoded codes of the held-out training digits, which no fit saw
    summary = json.loads((root / "metrics" / "sampler.json").read_text())
    assert q["floor"]["n"] == summary["held_out"] == sampler_params.held_out
    assert summary["n_codes"] == (sampler_params.fit_examples or 1000 - sampler_params.held_out)
    assert finite_number(q["floor"]["fid"]) and 0 <= q["floor"]["recall"] <= 1
    # the best sampler: the lowest FID recorded, the one sampling uses by default
    fids = {"prior": q["samples"]["fid"], **{n: s["samples"]["fid"] for n, s in q["samplers"].items()}}
    best = json.loads((root / "models" / "best_sampler.json").read_text())
    assert best["sampler"] == q["best"]["sampler"] == min(fids, key=fids.get) and best["fid"] == fids

    headline = json.loads((root / "metrics" / "headline.json").read_text())
    assert all(finite_number(v) for v in headline.values()), headline
    with sqlite3.connect(root / "mlflow.db") as db:
        assert [row[0] for row in db.execute("select status from runs")] == ["FINISHED"]


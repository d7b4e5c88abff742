"""End to end: the real `dvc repro` in a temporary copy of the repository, on 1200 real digits shipped in
tests/fixtures, with a real MLflow store (sqlite) in that copy."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from mnist_vae.params import Params

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "tests" / "fixtures" / "mnist_small.npz"
BIN = Path(sys.executable).parent

pytestmark = pytest.mark.slow


def sh(*cmd, cwd, check=True, env=None, timeout=600):
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", **(env or {})})
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def fixture_digests() -> dict[str, str]:
    with np.load(FIXTURE) as f:
        return {k: hashlib.sha256(np.ascontiguousarray(f[k]).tobytes()).hexdigest()
                for k in ("x_train", "y_train", "x_test", "y_test")}


def set_params(root: Path, **sections) -> None:
    path = root / "params.yaml"
    params = yaml.safe_load(path.read_text())
    for section, values in sections.items():
        if isinstance(values, dict):
            params[section].update(values)
        else:
            params[section] = values
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def ran_stages(output: str) -> list[str]:
    return [line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage '")]


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    """A copy of the repository (its tracked and untracked-but-not-ignored files), as its own git repo,
    with small-data params, after one full `dvc repro`."""
    root = tmp_path_factory.mktemp("pipeline") / "repo"
    files = sh("git", "ls-files", "--cached", "--others", "--exclude-standard", cwd=REPO).stdout.split()
    for rel in files:
        if (REPO / rel).is_file():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, root / rel)
    # start from the schema's defaults (the notebook's set-up), not from whatever the developer's
    # params.yaml holds right now (after `dvc exp run -S ...` it holds that experiment's values)
    (root / "params.yaml").write_text(yaml.safe_dump(Params().model_dump(), sort_keys=False))
    set_params(
        root,
        data={"source": "file", "path": str(FIXTURE), "sha256": fixture_digests()},
        train={"epochs": 3, "batch_size": 64},
        evaluate={"iw_samples": 10, "train_slice": 200, "mi_examples": 100},
        render={"latent_points": 200, "samples_grid": 4},
        tracking={"experiment": "pipeline-test", "log_model": True},
    )
    sh("git", "init", "-q", cwd=root)
    sh("git", "add", "-A", cwd=root)
    sh("git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init", cwd=root)
    out = sh("dvc", "repro", cwd=root).stdout
    assert ran_stages(out) == ["download", "dequantize", "train", "evaluate", "render"], out
    return root


def mlflow_runs(root: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(root / "mlflow.db") as db:
        return db.execute("select run_uuid, status from runs order by start_time").fetchall()


def test_outputs_are_exact_and_a_second_repro_does_nothing(repo):
    with np.load(repo / "data/raw/mnist.npz") as raw, np.load(FIXTURE) as fixture:
        for k in ("x_train", "y_train", "x_test", "y_test"):
            assert raw[k].dtype == np.uint8 and np.array_equal(raw[k], fixture[k])
        x = raw["x_train"]
    torch.manual_seed(0)  # the notebook's own formula
    notebook = ((np.float32(x) + torch.rand(x.shape).numpy()) / 255.).clip(0, 1).reshape(-1, 784)
    with np.load(repo / "data/processed/train.npz") as train:
        assert train["x"].tobytes() == notebook.tobytes()
    for out in ("models/vae.pt", "metrics/train.json", "metrics/eval.json", "metrics/history.csv"):
        assert (repo / out).is_file(), out
    figures = sorted(p.name for p in (repo / "reports/figures").glob("*.png"))
    assert figures == ["interpolation.png", "latent_space.png", "reconstructions.png",
                       "reparameterization.png", "samples.png", "training_curves.png"]
    again = sh("dvc", "repro", cwd=repo).stdout
    assert ran_stages(again) == [] and "up to date" in again


def test_dvc_sees_metrics_plots_and_the_dag(repo):
    metrics = json.loads(sh("dvc", "metrics", "show", "--json", cwd=repo).stdout)
    text = json.dumps(metrics)
    assert "iw_nll" in text and "train_total" in text
    dag = sh("dvc", "dag", "--md", cwd=repo).stdout
    for a, b in [("download", "dequantize"), ("dequantize", "train"), ("train", "evaluate"), ("train", "render")]:
        assert f"{a}" in dag and f"{b}" in dag
    html = sh("dvc", "plots", "show", "-o", str(repo / "plots_html"), cwd=repo)
    assert html.returncode == 0 and (repo / "plots_html" / "index.html").is_file()
    report = (repo / "plots_html" / "index.html").read_text()
    assert "reports_figures_samples_png" in report and "Negative ELBO" in report


def test_the_mlflow_run_has_everything(repo):
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{repo / 'mlflow.db'}")
    run_id = json.loads((repo / "models/mlflow_run.json").read_text())["run_id"]
    run = mlflow.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["model.latent_dim"] == "20" and run.data.params["train.lr"] == "0.001"
    assert run.data.params["evaluate.iw_samples"] == "10" and run.data.params["render.samples_grid"] == "4"
    for tag in ("git_commit", "git_dirty", "train_data_sha256", "torch_version", "device"):
        assert run.data.tags.get(tag), tag
    client = mlflow.MlflowClient()
    history = client.get_metric_history(run_id, "train_total")
    assert [m.step for m in history] == [1, 2, 3]
    assert history[-1].value < history[0].value
    assert "eval.test.iw_nll" in run.data.metrics and "eval.posterior.active_units" in run.data.metrics
    figures = {a.path for a in client.list_artifacts(run_id, "figures")}
    assert "figures/samples.png" in figures
    model = mlflow.pytorch.load_model(f"runs:/{run_id}/model")
    mu, logvar = model.encode(torch.rand(2, 784))
    assert mu.shape == (2, 20) and model.sample(3).shape == (3, 784)


def test_a_render_param_reruns_render_only(repo):
    set_params(repo, render={"samples_grid": 5})
    try:
        assert ran_stages(sh("dvc", "repro", cwd=repo).stdout) == ["render"]
    finally:
        set_params(repo, render={"samples_grid": 4})
        sh("dvc", "repro", cwd=repo)


def test_latent_dim_reruns_train_evaluate_render_and_opens_a_new_run(repo):
    before = {r for r, _ in mlflow_runs(repo)}
    set_params(repo, model={"latent_dim": 2})
    try:
        out = sh("dvc", "repro", cwd=repo).stdout
        assert ran_stages(out) == ["train", "evaluate", "render"]
        assert (repo / "reports/figures/manifold.png").is_file()  # latent_dim 2 adds the decoded manifold
        new = [(r, s) for r, s in mlflow_runs(repo) if r not in before]
        assert len(new) == 1 and new[0][1] == "FINISHED"
        assert json.loads((repo / "models/mlflow_run.json").read_text())["run_id"] == new[0][0]
    finally:
        set_params(repo, model={"latent_dim": 20})


def test_an_interrupted_training_run_is_marked_failed_and_writes_nothing(repo):
    set_params(repo, train={"epochs": 500})
    model = repo / "models/vae.pt"
    before_model = model.read_bytes() if model.exists() else None
    before = {r for r, _ in mlflow_runs(repo)}
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.Popen([sys.executable, "stages/train.py"], cwd=repo, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:  # wait until the run has logged an epoch
            new = [r for r, _ in mlflow_runs(repo) if r not in before]
            if new:
                with sqlite3.connect(repo / "mlflow.db") as db:
                    if db.execute("select count(*) from metrics where run_uuid=? and key='train_total'",
                                  new).fetchone()[0]:
                        break
            time.sleep(0.5)
        else:
            pytest.fail("training never logged an epoch")
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
        set_params(repo, train={"epochs": 3})
    assert proc.returncode != 0
    assert "Traceback" not in out and "interrupted" in out
    status = dict(mlflow_runs(repo))[new[0]]
    assert status == "FAILED"
    assert (model.read_bytes() if model.exists() else None) == before_model  # no half-written model


def test_bad_params_and_corrupt_data_stop_with_one_line(repo):
    params = (repo / "params.yaml").read_text()
    try:
        set_params(repo, model={"lattent_dim": 2})
        proc = sh("dvc", "repro", "train", cwd=repo, check=False)
        assert proc.returncode != 0
        assert "unknown key 'model.lattent_dim'; did you mean 'model.latent_dim'?" in proc.stdout + proc.stderr
    finally:
        (repo / "params.yaml").write_text(params)
    train = repo / "data/processed/train.npz"
    good = train.read_bytes()
    try:
        train.chmod(0o644)
        train.write_bytes(good[: len(good) // 2])
        proc = sh(sys.executable, "stages/train.py", cwd=repo, check=False)
        assert proc.returncode == 2
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "corrupt or truncated" in lines[0] and "dvc repro" in lines[0]
    finally:
        train.write_bytes(good)


def test_queued_experiments_land_in_the_same_store(repo):
    before = {r for r, _ in mlflow_runs(repo)}
    sh("git", "add", "-A", cwd=repo)
    sh("git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "baseline", "--allow-empty", cwd=repo)
    sh("dvc", "exp", "run", "--queue", "-S", "train.epochs=1", "--name", "queued-one", cwd=repo)
    sh("dvc", "exp", "run", "--run-all", cwd=repo, timeout=900)
    new = [r for r, _ in mlflow_runs(repo) if r not in before]
    assert len(new) == 1, "the queued experiment's run is not in the repository's store"
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{repo / 'mlflow.db'}")
    run = mlflow.get_run(new[0])
    assert run.info.status == "FINISHED" and run.data.tags.get("dvc_exp_name") == "queued-one"
    assert "eval.test.iw_nll" in run.data.metrics  # evaluate, run in DVC's temporary copy, found the run too
    artifacts = mlflow.MlflowClient().list_artifacts(new[0], "figures")
    assert artifacts and (repo / "mlartifacts").is_dir()  # artifacts beside the store, not in the deleted copy
    shown = json.loads(sh("dvc", "exp", "show", "--json", cwd=repo).stdout)
    assert "queued-one" in json.dumps(shown)


def test_the_mlflow_ui_serves_runs_and_figures(repo):
    import socket
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "MLFLOW_UI_PORT": str(port)}
    env.pop("MLFLOW_TRACKING_URI", None)
    # the Makefile's `ui` target, without its set-up prerequisite (this test already runs inside the venv)
    ui = subprocess.Popen([str(BIN / "mlflow"), "ui", "--host", "127.0.0.1", "--port", str(port),
                           "--backend-store-uri", f"sqlite:///{repo / 'mlflow.db'}"],
                          cwd=repo, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                          start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 90
        while True:
            try:
                urllib.request.urlopen(f"{base}/health", timeout=2)
                break
            except OSError:
                if time.time() > deadline or ui.poll() is not None:
                    pytest.fail("the MLflow UI did not start")
                time.sleep(0.5)
        req = urllib.request.Request(f"{base}/api/2.0/mlflow/experiments/get-by-name?experiment_name=pipeline-test")
        exp_id = json.load(urllib.request.urlopen(req))["experiment"]["experiment_id"]
        body = json.dumps({"experiment_ids": [exp_id], "max_results": 100}).encode()
        req = urllib.request.Request(f"{base}/api/2.0/mlflow/runs/search", data=body,
                                     headers={"Content-Type": "application/json"})
        runs = json.load(urllib.request.urlopen(req))["runs"]
        latent = {p["value"] for r in runs for p in r["data"]["params"] if p["key"] == "model.latent_dim"}
        assert {"2", "20"} <= latent  # the two runs a user compares side by side
        finished = [r for r in runs if r["info"]["status"] == "FINISHED"]
        run_id = finished[0]["info"]["run_id"]
        png = urllib.request.urlopen(f"{base}/get-artifact?path=figures/samples.png&run_uuid={run_id}").read()
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
    finally:
        os.killpg(ui.pid, signal.SIGTERM)
        ui.wait(timeout=30)

"""End to end: the real `dvc repro` in a temporary copy of the repository, on 1200 real digits shipped in
tests/fixtures, with a real MLflow store (sqlite) in that copy.

Every test passes alone: the module's `repo` has run the whole pipeline once; a test that changes it
puts it back, and a test that needs a store or a checkout of its own works in a copy (`fork`)."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from helpers.pipeline import (
    FIXTURE,
    client,
    env,
    history_numbers,
    mlflow_ui,
    ran_stages,
    runs,
    set_params,
    sh,
    snapshot,
    statuses,
    wait_for,
)
from mnist_vae import load
from mnist_vae.ops.team_server import free_port
from mnist_vae.params import load_params
from mnist_vae.pipeline import headline, tracking

pytestmark = pytest.mark.slow


# --------------------------------------------------------------------------- the pipeline


def test_outputs_are_exact_and_a_second_repro_does_nothing(repo):
    with np.load(repo / "data/raw/mnist.npz") as raw, np.load(FIXTURE) as fixture:
        for k in ("x_train", "y_train", "x_test", "y_test"):
            assert raw[k].dtype == np.uint8 and np.array_equal(raw[k], fixture[k])
        x = raw["x_train"]
    torch.manual_seed(0)  # the notebook's own formula
    notebook = ((np.float32(x) + torch.rand(x.shape).numpy()) / 255.).clip(0, 1).reshape(-1, 784)
    with np.load(repo / "data/processed/train.npz") as train:
        assert train["x"].tobytes() == notebook.tobytes()
    for out in ("models/vae.pt", "models/sampler.pt", "models/best_sampler.json", "metrics/train.json",
                "metrics/sampler.json", "metrics/eval.json", "metrics/history.csv"):
        assert (repo / out).is_file(), out
    assert not (repo / "models/mlflow_run.json").exists()
    figures = sorted(p.name for p in (repo / "reports/figures").glob("*.png"))
    assert figures == ["class_histogram.png", "interpolation.png", "latent_space.png", "reconstructions.png",
                       "reparameterization.png", "samples.png", "samples_by_class.png", "samples_gmm.png",
                       "samples_prior_vs_gmm.png", "training_curves.png"]
    quality = json.loads((repo / "metrics/eval.json").read_text())["quality"]
    assert set(quality["samplers"]) == {"gmm"} and quality["samplers"]["gmm"]["samples"]["n"] == 200
    assert quality["code_log_density"]["gmm"] > quality["code_log_density"]["prior"]
    fitted = json.loads((repo / "metrics/sampler.json").read_text())
    assert quality["floor"]["n"] == fitted["held_out"] == 200 and fitted["n_codes"] == 800  # the fit never saw them
    best = json.loads((repo / "models/best_sampler.json").read_text())
    fids = {"prior": quality["samples"]["fid"], "gmm": quality["samplers"]["gmm"]["samples"]["fid"]}
    assert best["sampler"] == quality["best"]["sampler"] == min(fids, key=fids.get) and best["fid"] == fids
    again = sh("dvc", "repro", cwd=repo).stdout
    assert ran_stages(again) == [] and "up to date" in again


def test_the_dag_has_exactly_the_pipelines_edges(repo):
    dot = sh("dvc", "dag", "--dot", cwd=repo).stdout
    edges = {tuple(part.strip().strip('";') for part in line.split("->")) for line in dot.splitlines() if "->" in line}
    assert edges == {
        ("download", "dequantize"), ("dequantize", "train"), ("dequantize", "evaluate"), ("dequantize", "render"),
        ("download", "classifier"), ("download", "evaluate"), ("classifier", "evaluate"), ("classifier", "render"),
        ("classifier", "track"), ("dequantize", "sampler"), ("train", "sampler"),
        ("sampler", "evaluate"), ("sampler", "render"), ("sampler", "track"),
        ("train", "evaluate"), ("train", "render"), ("train", "track"), ("evaluate", "track"), ("render", "track"),
        ("evaluate", "render"),
        ("classifier", "headline"), ("train", "headline"), ("evaluate", "headline"), ("headline", "track"),
        ("dequantize", "track"),
    }


def test_no_stage_but_track_imports_mlflow(fork):
    poison = fork / "poison" / "mlflow"
    poison.mkdir(parents=True)
    (poison / "__init__.py").write_text("raise ImportError('this stage imported mlflow')\n")
    path = os.pathsep.join(filter(None, [str(poison.parent), os.environ.get("PYTHONPATH")]))
    for stage in ("download", "dequantize", "classifier", "train", "sampler", "evaluate", "render"):
        sh(sys.executable, f"stages/{stage}.py", cwd=fork, PYTHONPATH=path)
    proc = sh(sys.executable, "stages/track.py", cwd=fork, check=False, PYTHONPATH=path)
    assert proc.returncode != 0 and "this stage imported mlflow" in proc.stderr  # the poison works


def test_dvc_sees_the_headline_metrics_and_plots(repo):
    [metrics] = json.loads(sh("dvc", "metrics", "show", "--json", cwd=repo).stdout).values()  # the workspace's
    assert metrics["data"].keys() == {"metrics/headline.json"}  # the details are not DVC metrics
    shown = metrics["data"]["metrics/headline.json"]["data"]
    assert shown == json.loads((repo / "metrics/headline.json").read_text())
    # every number but bits per dimension (dequantize.mode uniform only); the fitted gmm's are there
    assert shown.keys() == {name for name in headline.HEADLINE if name != "test_bpd"}
    html = sh("dvc", "plots", "show", "-o", str(repo / "plots_html"), cwd=repo)
    assert html.returncode == 0 and (repo / "plots_html" / "index.html").is_file()
    report = (repo / "plots_html" / "index.html").read_text()
    assert "reports_figures_samples_png" in report and "Negative ELBO" in report


def metric_columns(exp_show: list[dict]) -> set[str]:
    """The metric columns of `dvc exp show --json`: every file's keys, over every row."""
    rows = [exp_show[0], *[e for row in exp_show for exp in row.get("experiments") or [] for e in exp["revs"]]]
    return {f"{path}:{key}" for row in rows for path, found in ((row.get("data") or {}).get("metrics") or {}).items()
            for key in found.get("data", {})}


def test_the_committed_baseline_is_what_dvc_compares_with(fork, tmp_path):
    # the fixture committed the pipeline's result as a user commits the baseline: dvc.lock with the
    # headline and the history, which git tracks while every other output stays DVC's
    assert sh("git", "ls-files", "dvc.lock", "metrics", cwd=fork).stdout.split() == [
        "dvc.lock", "metrics/headline.json", "metrics/history.csv"]
    committed = json.loads((fork / "metrics/headline.json").read_text())
    clone = tmp_path / "clone"  # a fresh clone compares with the baseline before reproducing anything
    sh("git", "clone", "-q", str(fork), str(clone), cwd=tmp_path)
    [shown] = json.loads(sh("dvc", "metrics", "show", "--json", cwd=clone).stdout).values()
    assert shown["data"]["metrics/headline.json"]["data"] == committed

    set_params(fork, train={"lr": 0.002})
    assert ran_stages(sh("dvc", "repro", cwd=fork).stdout) == ["train", "sampler", "evaluate", "headline", "render", "track"]
    now = json.loads((fork / "metrics/headline.json").read_text())
    proc = sh("dvc", "metrics", "diff", "--json", cwd=fork)
    diff = json.loads(proc.stdout)["metrics/headline.json"]
    assert "failed to load" not in proc.stderr
    assert {k: (v["old"], v["new"]) for k, v in diff.items()} == {
        k: (committed[k], now[k]) for k in committed if committed[k] != now[k]}  # HEAD beside the workspace
    assert "test_nll_iwae" in diff and "sample_fid" in diff  # another learning rate, other numbers
    params = json.loads(sh("dvc", "params", "diff", "--json", cwd=fork).stdout)
    assert params == {"params.yaml": {"train.lr": {"old": 0.001, "new": 0.002, "diff": 0.001}}}
    plots = sh("dvc", "plots", "diff", "--json", cwd=fork)
    assert "failed to load" not in plots.stdout + plots.stderr
    curves = [d for d in json.loads(plots.stdout)["data"]["negative_elbo"] if d.get("type") == "vega"]
    assert {rev for d in curves for rev in d["revisions"]} == {"HEAD", "workspace"}  # both curves, HEAD's from git

    exps = json.loads(sh("dvc", "exp", "show", "--json", cwd=fork).stdout)
    columns = metric_columns(exps)
    assert columns == {f"metrics/headline.json:{k}" for k in committed} and len(columns) <= 15
    baseline = next(row for row in exps if row["rev"] != "workspace")
    assert baseline["data"]["metrics"]["metrics/headline.json"]["data"] == committed  # a row of numbers, not '!'


def test_the_run_is_complete(repo):
    import mlflow

    [run] = runs(repo)
    c = client(repo)
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert params["model.latent_dim"] == "20" and params["train.lr"] == "0.001"
    assert params["evaluate.iw_samples"] == "10" and params["render.samples_grid"] == "4"
    for tag in ("mlflow.source.git.commit", "mlflow.source.git.dirty", "mlflow.source.name", "train_data_sha256",
                "torch_version", "device", "fingerprint"):
        assert run.data.tags.get(tag), tag
    with open(repo / "metrics/history.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    for key in ("train_total", "train_rec", "train_kl", "test_total", "test_rec", "test_kl"):
        logged = [(m.step, m.value, m.timestamp) for m in c.get_metric_history(run.info.run_id, f"training/{key}")]
        assert logged == [(int(r["epoch"]), float(r[key]), int(1000 * float(r["time"]))) for r in rows], key
    evaluation = json.loads((repo / "metrics/eval.json").read_text())
    assert run.data.metrics["test/iw_nll"] == evaluation["test"]["iw_nll"]
    assert run.data.metrics["representation/active_units"] == evaluation["posterior"]["active_units"]
    names = {a.path for a in c.list_artifacts(run.info.run_id)} | {
        a.path for a in c.list_artifacts(run.info.run_id, "figures")}
    assert {"history.csv", "eval.json", "train.json", "sampler.json", "checkpoint", "figures/samples.png",
            "figures/samples_prior_vs_gmm.png", "explorer.html"} <= names
    assert {a.path for a in c.list_artifacts(run.info.run_id, "checkpoint")} == {
        "checkpoint/vae.pt", "checkpoint/sampler.pt", "checkpoint/best_sampler.json"}
    assert run.data.metrics["samples/gmm/fid"] == evaluation["quality"]["samplers"]["gmm"]["samples"]["fid"]
    assert run.data.metrics["samplers/gmm/components"] == 5
    assert c.get_experiment(run.info.experiment_id).tags["mlflow.experimentKind"] == "custom_model_development"
    images = {a.path for a in c.list_artifacts(run.info.run_id, "images")}  # what log_image wrote, per key and step
    last = int(rows[-1]["epoch"])
    for key, step in (("samples/prior", 0), ("samples/gmm", 0), ("reconstructions", 0),  # figures: step 0
                      ("progress/samples", 0), ("progress/samples", last), ("progress/reconstructions", last)):
        assert any(p.startswith(f"images/{key.replace('/', '~')}+step+{step}+") for p in images), (key, step, images)
    [version] = c.search_model_versions("name = 'pipeline-vae'")
    assert version.run_id == run.info.run_id
    mlflow.set_tracking_uri(f"sqlite:///{repo / 'mlflow.db'}")
    model = load(f"models:/pipeline-vae/{version.version}")
    mu, logvar = model.vae.encode(torch.rand(2, 784))
    assert mu.shape == (2, 20) and model.vae.sample(3).shape == (3, 784)
    name = tracking.model_name(load_params(repo / "params.yaml"))
    by_run = load(f"runs:/{run.info.run_id}/{name}")
    torch.testing.assert_close(by_run.vae.state_dict(), model.vae.state_dict())


def test_the_mnist_vae_command_uses_the_pipelines_checkpoint_and_the_version_track_registered(repo, tmp_path):
    command = shutil.which("mnist-vae", path=env()["PATH"])
    assert command, "the mnist-vae console script is not installed; run `make setup`"
    info = json.loads(sh(command, "info", cwd=repo).stdout)
    assert info["dequantize"]["mode"] == "notebook" and "dvc.lock" in info["dequantize"]["from"]  # what trained it
    assert info["evaluation"]["test"]["iw_nll"] == json.loads((repo / "metrics/eval.json").read_text())["test"]["iw_nll"]
    [version] = client(repo).search_model_versions("name = 'pipeline-vae'")
    best = json.loads((repo / "models/best_sampler.json").read_text())["sampler"]
    for sampler in (None, "prior", "gmm"):  # the default is the recorded best, locally and in the registered model
        for model, where in (("models/vae.pt", "local"), (f"models:/pipeline-vae/{version.version}", "registered")):
            proc = sh(command, "sample", "-n", "3", "--seed", "2", "--model", model, "-o", str(tmp_path / f"{where}_{sampler}.npy"),
                      *(["--sampler", sampler] if sampler else []), cwd=repo, MLFLOW_TRACKING_URI=f"sqlite:///{repo / 'mlflow.db'}")
            assert f"samples from the sampler {sampler or best}," in proc.stderr
        assert np.array_equal(np.load(tmp_path / f"local_{sampler}.npy"), np.load(tmp_path / f"registered_{sampler}.npy"))
    assert np.array_equal(np.load(tmp_path / "local_None.npy"), np.load(tmp_path / f"local_{best}.npy"))
    assert not np.array_equal(np.load(tmp_path / "local_gmm.npy"), np.load(tmp_path / "local_prior.npy"))
    assert info["samplers"]["available"] == ["prior", "gmm"] and info["samplers"]["default"] == best


def test_a_cached_training_experiment_gets_its_own_complete_run_and_the_baseline_is_untouched(fork, tmp_path):
    [baseline] = runs(fork)
    before = snapshot(fork, baseline.info.run_id, tmp_path / "before")
    out = sh("dvc", "exp", "run", "-S", "evaluate.iw_samples=5", "--name", "k5", cwd=fork).stdout
    assert "train" not in ran_stages(out) and "evaluate" in ran_stages(out)  # training came from the cache
    out = sh("dvc", "exp", "run", "-S", "render.samples_grid=3", "--name", "grid3", cwd=fork).stdout
    assert ran_stages(out) == ["render", "track"]
    found = runs(fork)
    assert len(found) == 3 and all(r.info.status == "FINISHED" for r in found)
    assert snapshot(fork, baseline.info.run_id, tmp_path / "after") == before  # byte for byte
    by_name = {r.data.tags.get("dvc_exp_name"): r for r in found}
    k5, grid3 = by_name["k5"], by_name["grid3"]
    assert k5.data.params["evaluate.iw_samples"] == "5" and grid3.data.params["render.samples_grid"] == "3"
    assert "test/iw_nll" in k5.data.metrics and "training/train_total" in k5.data.metrics  # complete, not a patch
    assert not any(k.startswith("override.") for r in found for k in r.data.tags)
    assert len({r.data.tags["fingerprint"] for r in found}) == 3


def stored(root: Path) -> dict[str, dict]:
    """run id -> its params, latest metrics and fingerprint, read straight from the sqlite file (a client
    in this process would keep reading a deleted store through its open connection)."""
    with sqlite3.connect(root / "mlflow.db") as db:
        def rows(table, run_id):
            return dict(db.execute(f"select key, value from {table} where run_uuid = ?", (run_id,)))
        return {run_id: {"params": rows("params", run_id), "metrics": rows("latest_metrics", run_id),
                         "fingerprint": rows("tags", run_id)["fingerprint"]}
                for (run_id,) in db.execute("select run_uuid from runs where status = 'FINISHED'")}


def test_track_is_idempotent_and_rebuilds_a_lost_store_without_training(fork):
    [(run_id, run)] = stored(fork).items()
    assert ran_stages(sh("dvc", "repro", "-s", "-f", "track", cwd=fork).stdout) == ["track"]
    assert list(stored(fork)) == [run_id]
    (fork / "mlflow.db").unlink()
    shutil.rmtree(fork / "mlartifacts")
    assert "dvc repro -s -f track" in sh("make", "-n", "track", cwd=fork).stdout  # what the README tells users
    assert ran_stages(sh("dvc", "repro", "-s", "-f", "track", cwd=fork).stdout) == ["track"]
    [(rebuilt_id, rebuilt)] = stored(fork).items()
    assert rebuilt_id != run_id and rebuilt == run  # the same params, metrics and fingerprint


def test_an_unreachable_store_fails_track_alone_with_one_line(fork):
    port = free_port()
    before = {p: p.read_bytes() for p in [*(fork / "metrics").iterdir(), fork / "models/vae.pt"]}
    set_params(fork, evaluate={"iw_samples": 4})
    proc = sh("dvc", "repro", cwd=fork, check=False, MLFLOW_TRACKING_URI=f"http://127.0.0.1:{port}")
    assert proc.returncode != 0 and ran_stages(proc.stdout) == ["evaluate", "headline", "track"]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("track: error:")]
    assert len(errors) == 1 and f"http://127.0.0.1:{port}" in errors[0] and "Traceback" not in proc.stderr
    assert (fork / "models/vae.pt").read_bytes() == before[fork / "models/vae.pt"]
    assert json.loads((fork / "metrics/eval.json").read_text())["likelihood"]["iw_samples"] == 4
    status = sh("dvc", "status", cwd=fork).stdout
    assert "track:" in status and "evaluate:" not in status and "train:" not in status  # only track is left
    assert ran_stages(sh("dvc", "repro", cwd=fork).stdout) == ["track"]  # the store is back: just track
    assert [r.data.params["evaluate.iw_samples"] for r in runs(fork)] == ["10", "4"]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_an_interrupted_training_leaves_nothing_fresh_and_the_next_repro_matches(fork, sig):
    # interrupted once its first epoch has ended, in a training of so many epochs that it cannot end
    # before the signal arrives however slow or busy the machine (100000 epochs: hours, at any speed);
    # from epoch 1, not extending the baseline's 3 from the state train keeps (docs/resume.md)
    (fork / "models/train_state.pt").unlink()
    set_params(fork, train={"epochs": 100_000})
    log = open(fork / "repro.log", "w+")
    proc = subprocess.Popen(["dvc", "repro"], cwd=fork, env=env(PYTHONUNBUFFERED="1"), stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        def first_epoch():
            output = (fork / "repro.log").read_text()
            assert proc.poll() is None, output[-3000:]  # a repro that ended before its first epoch fails at once
            return "epoch   1  train" in output

        wait_for(first_epoch, "the first epoch", timeout=600)
        os.killpg(proc.pid, sig)  # as Ctrl-C in a terminal, or a queue worker's kill, reaches every process
        proc.wait(timeout=120)
        # dvc dies of SIGTERM at once; the stage (same group, writing to the same log) ends a moment later
        deadline = time.time() + 120
        while "train: interrupted" not in (fork / "repro.log").read_text() and time.time() < deadline:
            time.sleep(0.1)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    output = (fork / "repro.log").read_text()
    assert proc.returncode != 0 and "train: interrupted" in output, output[-3000:]
    assert not (fork / "models/vae.pt").exists() and not (fork / "metrics/history.csv").exists()
    assert "RUNNING" not in statuses(fork).values() and len(runs(fork)) == 1  # track never ran
    assert "train:" in sh("dvc", "status", cwd=fork).stdout  # nothing claims to be up to date
    set_params(fork, train={"epochs": 4})
    assert ran_stages(sh("dvc", "repro", cwd=fork).stdout) == ["train", "sampler", "evaluate", "headline", "render", "track"]
    interrupted_then_rerun = history_numbers(fork)
    assert len(interrupted_then_rerun) == 4
    (fork / "models/train_state.pt").unlink()
    sh("dvc", "repro", "-s", "-f", "train", cwd=fork)  # the same params again, never interrupted
    assert history_numbers(fork) == interrupted_then_rerun
    assert set(statuses(fork).values()) == {"FINISHED"}


def test_a_killed_track_leaves_its_run_alone_and_the_next_track_logs_afresh(fork):
    (fork / "mlflow.db").unlink()
    shutil.rmtree(fork / "mlartifacts")
    for sig, expected in ((signal.SIGTERM, "FAILED"), (signal.SIGKILL, "RUNNING")):
        proc = subprocess.Popen([sys.executable, "stages/track.py"], cwd=fork, env=env(),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        known = set(statuses(fork))
        try:
            wait_for(lambda: any(r not in known for r in statuses(fork)), "track to open its run")
            proc.send_signal(sig)
            _, err = proc.communicate(timeout=60)
        finally:
            proc.kill()
        [new] = [r for r in statuses(fork) if r not in known]
        assert proc.returncode != 0 and statuses(fork)[new] == expected, (sig, err)
        if sig == signal.SIGTERM:
            assert "Traceback" not in err and "track: interrupted" in err
    killed = [r for r, s in statuses(fork).items() if s == "RUNNING"]
    assert ran_stages(sh("dvc", "repro", "-s", "-f", "track", cwd=fork).stdout) == ["track"]
    final = statuses(fork)
    assert [r for r, s in final.items() if s == "RUNNING"] == killed  # not resurrected, not reused
    assert sorted(final.values()) == ["FAILED", "FINISHED", "RUNNING"]


def test_queued_experiments_on_a_new_store_give_one_run_each_and_one_experiment(fork):
    (fork / "mlflow.db").unlink()
    shutil.rmtree(fork / "mlartifacts")
    for k in (2, 3, 4):
        sh("dvc", "exp", "run", "--queue", "-S", f"evaluate.iw_samples={k}", "--name", f"queued-k{k}", cwd=fork)
    sh("dvc", "queue", "start", "-j", "2", cwd=fork)

    def done():
        status = sh("dvc", "queue", "status", cwd=fork).stdout
        return status.count("Success") + status.count("Failed") == 3

    wait_for(done, "the three queued experiments", timeout=400)
    status = sh("dvc", "queue", "status", cwd=fork).stdout
    assert status.count("Success") == 3, status + sh("dvc", "queue", "logs", "queued-k2", cwd=fork, check=False).stdout
    found = runs(fork)
    assert sorted(r.data.tags["dvc_exp_name"] for r in found) == ["queued-k2", "queued-k3", "queued-k4"]
    assert all(r.info.status == "FINISHED" for r in found)
    c = client(fork)
    assert [e.name for e in c.search_experiments() if e.name != "Default"] == ["pipeline-test"]
    figures = sorted(p.name for p in (fork / "reports/figures").glob("*.png"))
    logged = [Path(f.path).name for f in c.list_artifacts(found[0].info.run_id, "figures")]
    assert sorted(logged) == figures and len(figures) == 10  # artifacts beside the store, not the copy
    shown = json.dumps(json.loads(sh("dvc", "exp", "show", "--json", cwd=fork).stdout))
    assert all(f"queued-k{k}" in shown for k in (2, 3, 4))


def test_a_render_param_reruns_render_and_track_only(fork):
    set_params(fork, render={"samples_grid": 5})
    assert ran_stages(sh("dvc", "repro", cwd=fork).stdout) == ["render", "track"]


def test_the_samplers_temperature_is_one_experiment_that_refits_nothing(fork):
    before = (fork / "models/sampler.pt").read_bytes()
    out = sh("dvc", "exp", "run", "-S", "sampler.temperature=0.9", "--name", "t0.9", cwd=fork).stdout
    assert ran_stages(out) == ["evaluate", "headline", "render", "track"]  # the fit stays: only the draws change
    assert (fork / "models/sampler.pt").read_bytes() == before
    quality = json.loads((fork / "metrics/eval.json").read_text())["quality"]
    best = json.loads((fork / "models/best_sampler.json").read_text())
    assert quality["samplers"]["gmm"]["temperature"] == best["temperatures"]["gmm"] == 0.9
    set_params(fork, sampler={"held_out": 300})  # what is fitted changes: the fit reruns
    assert ran_stages(sh("dvc", "repro", cwd=fork).stdout) == ["sampler", "evaluate", "headline", "render", "track"]
    assert json.loads((fork / "metrics/eval.json").read_text())["quality"]["floor"]["n"] == 300


def test_latent_dim_reruns_training_and_logs_a_new_run(fork):
    set_params(fork, model={"latent_dim": 2})
    assert ran_stages(sh("dvc", "repro", cwd=fork).stdout) == ["train", "sampler", "evaluate", "headline", "render", "track"]
    assert (fork / "reports/figures/manifold.png").is_file()  # latent_dim 2 adds the decoded manifold
    assert [r.data.params["model.latent_dim"] for r in runs(fork)] == ["20", "2"]


def test_bad_params_and_corrupt_data_stop_with_one_line(fork):
    set_params(fork, model={"lattent_dim": 2})
    proc = sh("dvc", "repro", "train", cwd=fork, check=False)
    assert proc.returncode != 0
    assert "unknown key 'model.lattent_dim'; did you mean 'model.latent_dim'?" in proc.stdout + proc.stderr
    set_params(fork, model={"latent_dim": 20})
    params = yaml.safe_load((fork / "params.yaml").read_text())
    del params["model"]["lattent_dim"]
    (fork / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    train = fork / "data/processed/train.npz"
    good = train.read_bytes()
    train.unlink()  # a link into DVC's cache: replace it, never write through it
    train.write_bytes(good[: len(good) // 2])
    proc = sh(sys.executable, "stages/train.py", cwd=fork, check=False)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "corrupt or truncated" in lines[0] and "dvc repro" in lines[0]


def test_the_mlflow_ui_opens_the_experiment_on_its_runs_and_serves_figures(repo):
    port = free_port()
    with mlflow_ui(repo, port) as base:
        got = json.load(urllib.request.urlopen(
            f"{base}/api/2.0/mlflow/experiments/get-by-name?experiment_name=pipeline-test"))["experiment"]
        tags = {t["key"]: t["value"] for t in got.get("tags", [])}
        assert tags["mlflow.experimentKind"] == "custom_model_development"  # opens on the training runs
        body = json.dumps({"experiment_ids": [got["experiment_id"]], "max_results": 100}).encode()
        req = urllib.request.Request(f"{base}/api/2.0/mlflow/runs/search", data=body,
                                     headers={"Content-Type": "application/json"})
        [run] = json.load(urllib.request.urlopen(req))["runs"]
        assert run["info"]["status"] == "FINISHED"
        assert {"key": "model.latent_dim", "value": "20"} in run["data"]["params"]
        png = urllib.request.urlopen(
            f"{base}/get-artifact?path=figures/samples.png&run_uuid={run['info']['run_id']}").read()
        assert png == (repo / "reports/figures/samples.png").read_bytes()



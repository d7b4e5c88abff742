"""The search (mnist-vae search): real Optuna, real DVC experiments, real MLflow runs, on the small params of
tests/test_pipeline.py, in one clone with the embedded storage (a study shared on PostgreSQL by several clones:
tests/test_search_team.py)."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest
import yaml

from helpers.pipeline import (
    BIN,
    REPO,
    env,
    ran_stages,
    runs,
    set_params,
    sh,
    wait_for,
)
from helpers.search import SMALL_SEARCH, exp_names, project_files, search_cli, study_trials
from mnist_vae.errors import UserError
from mnist_vae.ops.search.spec import load_spec
from mnist_vae.ops.search.worker import set_param
from mnist_vae.ops.team_server import free_port
from mnist_vae.params import RESULT_SECTIONS


def spec_error(tmp_path, **search) -> str:
    with pytest.raises(UserError) as info:
        load_spec(project_files(tmp_path / "p", **search))
    message = str(info.value)
    assert "\n" not in message
    return message


# --------------------------------------------------------------------------- the spec, before any trial


def test_a_bad_space_is_refused_in_one_line(tmp_path):
    assert "did you mean 'train.beta'" in spec_error(tmp_path, space={"train.betta": [1.0]})
    assert "'train.lr'" in spec_error(tmp_path, space={"train.lr": {"low": 0.001, "high": 5.0}})  # lr <= 1
    message = spec_error(tmp_path, space={"train.epochs": {"low": 1, "high": 2.5}})  # a real range, a whole-number key
    assert "train.epochs" in message and "2.5" in message
    assert "'model.likelihood'" in spec_error(tmp_path, space={"model.likelihood": ["bernoulli", "poisson"]})
    assert "metrics/evl.json" in spec_error(tmp_path, objectives=[{"metric": "evl.test.iw_nll"}])
    assert "grid's 2 points" in spec_error(tmp_path, n_trials=3)
    assert "whole-number ranges" in spec_error(tmp_path, space={"train.lr": {"low": 0.001, "high": 0.01}})
    spec = load_spec(project_files(tmp_path / "ok", algorithm="tpe",
                                   space={"train.lr": {"low": 1.0e-4, "high": 0.01, "log": True}, "model.latent_dim": [2, 8]}))
    assert spec.names == ["eval.test.iw_nll"] and spec.metrics["eval"] == Path("metrics/eval.json")


@pytest.mark.process
def test_the_cli_refuses_a_bad_space_before_opening_any_storage(tmp_path):
    root = project_files(tmp_path / "p", space={"train.lr": {"low": 0.001, "high": 5.0}})
    proc = search_cli(root, "run", check=False)
    assert proc.returncode == 2
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith("mnist-vae: error:") and "search.space 'train.lr'" in line
    assert not (root / "optuna.db").exists() and not (root / "search-logs").exists()


@pytest.mark.process
def test_an_unreachable_storage_is_one_line_with_the_password_masked(tmp_path):
    root = project_files(tmp_path / "p")
    port = free_port()
    url = f"postgresql://optuna:pw-s3cret-9@127.0.0.1:{port}/optuna"
    for action in ("run", "status"):
        proc = search_cli(root, action, check=False, MNIST_VAE_SEARCH_STORAGE=url, timeout=120)
        assert proc.returncode == 2, proc.stderr
        [line] = proc.stderr.strip().splitlines()
        assert f"search storage postgresql://optuna:***@127.0.0.1:{port}/optuna failed" in line, line
        assert "pw-s3cret-9" not in proc.stdout + proc.stderr and "MNIST_VAE_SEARCH_STORAGE" in line


@pytest.mark.process  # the worker asks git for its commit
def test_a_trial_the_schema_refuses_fails_with_its_line_and_the_worker_goes_on(tmp_path):
    import optuna

    from mnist_vae.ops.search import Worker, open_study

    # each value alone is valid, iwae with beta 2 is not; the other point's experiment fails (no git, no DVC here)
    root = project_files(tmp_path / "p", space={"train.objective": ["iwae"], "train.beta": [2.0, 1.0]})
    spec = load_spec(root)
    study = open_study(spec, optuna.storages.InMemoryStorage(), "memory")
    said = []
    with pytest.raises(UserError, match="2 trials of study 's' failed"):
        Worker(root, spec, study, threads=1, poll=0.1, say=said.append).run()
    reasons = {t.params["train.beta"]: t.user_attrs["fail_reason"] for t in study.get_trials()}
    assert [t.state.name for t in study.get_trials()] == ["FAIL", "FAIL"]
    assert reasons[2.0].startswith("trial ") and "plain IWAE bound" in reasons[2.0] and "\n" not in reasons[2.0]
    assert "search-logs/s-" in reasons[1.0]  # the experiment ran and failed: its own line and log
    assert any("FAIL" in line and "plain IWAE bound" in line for line in said)


def test_overrides_are_hydra_values_dvc_reads_back():
    assert [set_param("train.lr", 1e-05), set_param("model.latent_dim", 20), set_param("train.dynamic_binarization", True),
            set_param("model.likelihood", "gaussian")] == [
        "++train.lr=1e-05", "++model.latent_dim=20", "++train.dynamic_binarization=true", "++model.likelihood='gaussian'"]


def test_the_search_section_is_no_stage_dependency():
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    assert stages["track"]["params"] == list(RESULT_SECTIONS)  # every section a result depends on, not `search`
    assert "search" not in RESULT_SECTIONS
    for name, stage in stages.items():
        assert not any("search" in str(p) or str(p).startswith("params.yaml") for p in stage.get("params", [])), name


# --------------------------------------------------------------------------- one machine, embedded storage


@pytest.mark.slow
def test_one_machine_with_the_embedded_storage_and_no_server(fork):
    set_params(fork, search={**SMALL_SEARCH, "study": "local"})
    before = {r.info.run_id for r in runs(fork)}
    proc = search_cli(fork, "run")
    assert "has its 2 COMPLETE trials" in proc.stderr, proc.stderr
    trials = study_trials(fork, "local")
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]
    assert sorted(t.params["train.beta"] for t in trials) == [0.5, 2.0]  # the grid, each point once
    assert exp_names(fork) == ["local-0", "local-1"]
    new = {r.info.run_id: r for r in runs(fork) if r.info.run_id not in before}
    assert sorted(t.user_attrs["mlflow_run_id"] for t in trials) == sorted(new)
    for t in trials:
        run = new[t.user_attrs["mlflow_run_id"]]
        assert run.info.status == "FINISHED" and run.data.tags["dvc_exp_name"] == f"local-{t.number}"
        assert (run.data.tags["search_study"], run.data.tags["search_trial"]) == ("local", str(t.number))
        assert float(run.data.params["train.beta"]) == t.params["train.beta"]
        assert run.data.metrics["test/iw_nll"] == t.value  # eval.json's test.iw_nll
        assert not any(k.startswith("search.") for k in run.data.params)  # the spec is not a result's param
    # the workspace is untouched (--temp), and editing the search section reruns nothing
    assert ran_stages(sh("dvc", "repro", cwd=fork).stdout) == []
    set_params(fork, search={**SMALL_SEARCH, "study": "another", "n_trials": 1})
    assert "changed" not in sh("dvc", "status", cwd=fork).stdout
    missing = search_cli(fork, "status", check=False)
    assert missing.returncode == 2 and "no study 'another'" in missing.stderr
    set_params(fork, search={**SMALL_SEARCH, "study": "local"})
    shown = search_cli(fork, "status").stdout
    best = min(trials, key=lambda t: t.value)
    assert "COMPLETE 2" in shown and f"best trial {best.number}: eval.test.iw_nll = {best.value:.6g}" in shown
    assert f"DVC experiment local-{best.number}, MLflow run {best.user_attrs['mlflow_run_id']}" in shown


# --------------------------------------------------------------------------- pruning


def test_the_pruner_needs_one_objective_to_minimize(tmp_path):
    two = [{"metric": "eval.test.iw_nll"}, {"metric": "eval.quality.samples.fid"}]
    for objectives in (two, [{"metric": "eval.quality.probe.test_accuracy", "direction": "maximize"}]):
        message = spec_error(tmp_path, objectives=objectives, pruner="median")
        assert "search.pruner median" in message and "one objective to minimize" in message
    spec = load_spec(project_files(tmp_path / "ok", pruner="median", prune_startup_trials=1, prune_warmup_epochs=0))
    assert (spec.search.pruner, spec.search.prune_startup_trials, spec.search.prune_warmup_epochs) == ("median", 1, 0)


@pytest.mark.slow
def test_a_hopeless_trial_is_pruned_and_leaves_nothing(fork):
    from mnist_vae.ops.search.study import open_storage, open_study

    search = {**SMALL_SEARCH, "study": "p", "algorithm": "random", "pruner": "median", "prune_startup_trials": 1,
              "prune_warmup_epochs": 0, "space": {"train.lr": [0.003, 1.0e-6], "train.epochs": [3, 400]}}
    set_params(fork, search=search)
    url = f"sqlite:///{fork / 'optuna.db'}"
    study = open_study(load_spec(fork), open_storage(url), url)
    study.enqueue_trial({"train.lr": 0.003, "train.epochs": 3})    # a short trial that learns
    study.enqueue_trial({"train.lr": 1.0e-6, "train.epochs": 400})  # a long one that cannot: pruned at once
    before = {r.info.run_id for r in runs(fork)}
    # started as `nohup make search &` starts it: SIGINT ignored, in the worker and everything it starts
    proc = subprocess.run([str(BIN / "mnist-vae"), "search", "run"], cwd=fork, env=env(OMP_NUM_THREADS="1"),
                          capture_output=True, text=True, timeout=1800,
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    assert proc.returncode == 0 and "has its 2 finished trials (1 COMPLETE, 1 PRUNED)" in proc.stderr, proc.stderr
    good, hopeless = study_trials(fork, "p")
    assert (good.state.name, hopeless.state.name) == ("COMPLETE", "PRUNED")
    assert sorted(good.intermediate_values) == [1, 2, 3]  # each epoch's test -ELBO, reported as it came
    epoch = hopeless.user_attrs["pruned_at_epoch"]
    assert 1 <= epoch < 400 and max(hopeless.intermediate_values) == epoch
    assert hopeless.intermediate_values[1] > good.intermediate_values[1]
    assert f"trial 1: PRUNED after epoch {epoch} of 400" in proc.stderr
    log = (fork / "search-logs" / "p-1.log").read_text()
    assert "epoch   1" in log and "epoch 400" not in log and "Running stage 'evaluate'" not in log
    # no DVC experiment, no MLflow run, no temporary copy left by the pruned trial
    assert exp_names(fork) == ["p-0"]
    new = [r for r in runs(fork) if r.info.run_id not in before]
    assert [(r.info.status, r.data.tags["search_trial"]) for r in new] == [("FINISHED", "0")]
    assert not list((fork / ".dvc" / "tmp" / "exps").glob("tmp*"))
    shown = search_cli(fork, "status").stdout
    assert "2 wanted finished (COMPLETE or PRUNED)" in shown and "COMPLETE 1, PRUNED 1" in shown
    assert f"trial 1 PRUNED after epoch {epoch}" in shown


@pytest.mark.slow
def test_a_worker_stopped_with_sigterm_stops_its_trial_and_leaves_nothing_running(fork):
    import os
    import time

    import psutil

    set_params(fork, search={**SMALL_SEARCH, "study": "t", "n_trials": 1, "space": {"train.epochs": [400]}})
    before = {r.info.run_id for r in runs(fork)}
    worker = subprocess.Popen([str(BIN / "mnist-vae"), "search", "run"], cwd=fork, env=env(OMP_NUM_THREADS="1"),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = fork / "search-logs" / "t-0.log"
    wait_for(lambda: log.exists() and "epoch   2" in log.read_text(), "the trial's second epoch", timeout=600)
    # the training's own python process; DVC may start it through `sh -c`, which some shells keep alive
    stage = [p for p in psutil.Process(worker.pid).children(recursive=True)
             if "python" in p.name() and "stages/train.py" in " ".join(p.cmdline())]
    assert len(stage) == 1
    os.kill(worker.pid, signal.SIGTERM)  # the worker alone, as a queue or `kill` stops it
    _, err = worker.communicate(timeout=300)
    assert worker.returncode != 0
    stage[0].wait(timeout=60)  # the trial's stage stopped with it: no orphan training on
    assert "epoch 400" not in log.read_text() and "interrupted; no output was written" in log.read_text()
    [trial] = study_trials(fork, "t")
    assert trial.state.name == "FAIL" and "interrupted" in trial.user_attrs["fail_reason"]
    time.sleep(2)
    assert exp_names(fork) == [] and [r for r in runs(fork) if r.info.run_id not in before] == []


# --------------------------------------------------------------------------- the dashboard


def test_the_dashboard_serves_the_study_with_its_pruned_trial_to_a_browser(tmp_path, launch_chromium):
    import json
    import urllib.request

    import optuna
    from selenium.webdriver.support.ui import WebDriverWait

    root = project_files(tmp_path / "p")
    study = optuna.create_study(storage=f"sqlite:///{root / 'optuna.db'}", study_name="s")  # the default storage
    done = study.ask()
    done.report(130.5, 1)
    study.tell(done, 120.25)
    hopeless = study.ask()
    hopeless.report(544.75, 1)
    study.tell(hopeless, state=optuna.trial.TrialState.PRUNED)
    port = free_port()
    server = subprocess.Popen([str(BIN / "mnist-vae"), "search", "dashboard", "--port", str(port)], cwd=root,
                              env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"

    def studies():
        try:
            with urllib.request.urlopen(f"{base}/api/studies", timeout=5) as r:
                return json.load(r)["study_summaries"]
        except OSError:
            assert server.poll() is None, server.stdout.read()
            return None

    try:
        wait_for(lambda: studies() is not None, "the dashboard's API", timeout=120)
        [summary] = studies()
        assert summary["study_name"] == "s"
        driver = launch_chromium(1400, 900)
        driver.get(f"{base}/dashboard/studies/{summary['study_id']}")
        text = lambda d: d.find_element("tag name", "body").text  # noqa: E731
        WebDriverWait(driver, 60).until(lambda d: "120.25" in text(d))  # the best value, on the study's page
        driver.get(f"{base}/dashboard/studies/{summary['study_id']}/trials")
        WebDriverWait(driver, 60).until(lambda d: "Pruned" in text(d) or "PRUNED" in text(d))
    finally:
        server.terminate()
        out, _ = server.communicate(timeout=60)
    assert f"optuna-dashboard on {base}/ over sqlite:///" in out

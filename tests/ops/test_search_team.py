"""The search shared by clones on the team's PostgreSQL: workers in two clones of the team team_project, a worker
killed mid-trial. Apart from tests/test_search.py so that pytest-xdist runs the two files side by side."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from helpers.pipeline import (
    BIN,
    env,
    ran_stages,
    set_params,
    sh,
    wait_for,
)
from helpers.search import SMALL_SEARCH, exp_names, search_cli, study_trials

# --------------------------------------------------------------------------- clones sharing a study on PostgreSQL
# The team tests' server and project (a small-data copy of this repository with a bare git remote, a DVC remote
# and the team's MLflow server); each clone runs its workers against the same Optuna database.
from helpers.team import client_env, clone, experiment_runs


def worker(root: Path, team, log: Path) -> subprocess.Popen:
    """`mnist-vae search run` in `root` against the team's PostgreSQL (study) and MLflow server (runs), in a
    process group of its own (killing the group is what a host dying does to it)."""
    extra = {**client_env(team, team.user), "MNIST_VAE_SEARCH_STORAGE": team.server.search_storage(),
             "PGPASSFILE": str(team.server.pgpass)}
    return subprocess.Popen([str(BIN / "mnist-vae"), "search", "run", "--threads", "1", "--heartbeat", "3"],
                            cwd=root, env=env(**extra), stdout=log.open("w"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def with_study(root: Path, **search) -> None:
    set_params(root, search={**SMALL_SEARCH, **search})
    sh("git", "commit", "-qam", f"search {search['study']}", cwd=root)


@pytest.fixture(scope="module")
def clones(team, team_project):
    return [clone(team_project, f"searcher-{i}") for i in (1, 2)]


def search_runs(team, team_project, study: str) -> list:
    return [r for r in experiment_runs(team, team_project.experiment) if r.data.tags.get("search_study") == study]


@pytest.mark.team
@pytest.mark.slow
def test_two_clones_share_one_study_on_postgresql(team, team_project, clones, tmp_path, monkeypatch):
    url = team.server.search_storage()
    for root in clones:
        with_study(root, study="shared", algorithm="random", n_trials=3,
                   space={"train.beta": {"low": 0.25, "high": 4.0, "log": True}})
    procs = [worker(root, team, tmp_path / f"worker-{i}.log") for i, root in enumerate(clones)]
    try:
        for proc in procs:
            proc.wait(timeout=2400)
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
    logs = [(tmp_path / f"worker-{i}.log").read_text() for i in range(2)]
    assert [p.returncode for p in procs] == [0, 0], logs
    monkeypatch.setenv("PGPASSFILE", str(team.server.pgpass))
    every = study_trials(clones[0], "shared", url.replace("postgresql://", "postgresql+psycopg2://"))
    trials = [t for t in every if t.state.name == "COMPLETE"]
    assert len(trials) == 3, logs
    # two workers asking for the last trial at the same moment: the later one stands down (docs/search.md), and
    # that is the only other trial there may be
    others = [(t.state.name, t.user_attrs.get("fail_reason", "")) for t in every if t.state.name != "COMPLETE"]
    assert all(state == "FAIL" and reason.startswith("not run: ") for state, reason in others), (others, logs)
    assert len({t.params["train.beta"] for t in trials}) == 3  # no trial ran twice
    names = sorted(exp for root in clones for exp in exp_names(root))
    assert names == sorted(f"shared-{t.number}" for t in trials)  # one DVC experiment per trial, in either clone
    assert all(len(exp_names(root)) >= 1 for root in clones), logs  # both workers worked
    found = search_runs(team, team_project, "shared")
    assert sorted((r.info.status, r.data.tags["search_trial"]) for r in found) == sorted(
        ("FINISHED", str(t.number)) for t in trials)
    for t in trials:
        [run] = [r for r in found if r.info.run_id == t.user_attrs["mlflow_run_id"]]
        assert run.data.metrics["test/iw_nll"] == t.value and run.data.tags["dvc_exp_name"] == f"shared-{t.number}"

    # collect: each clone pushes its experiments; a fresh clone pulls the best, applies it and reproduces it
    best = min(trials, key=lambda t: t.value)
    for root in clones:
        for name in exp_names(root):
            sh("dvc", "exp", "push", "origin", name, cwd=root, **client_env(team, team.user))
    fresh = clone(team_project, "searcher-fresh")
    sh("dvc", "exp", "pull", "origin", f"shared-{best.number}", cwd=fresh)
    sh("dvc", "exp", "apply", f"shared-{best.number}", cwd=fresh)
    out = sh("dvc", "repro", "--force", cwd=fresh, timeout=1800, OMP_NUM_THREADS="1", **client_env(team, team.user)).stdout
    assert "train" in ran_stages(out)  # really trained again (--force), from the experiment's params
    evaluation = json.loads((fresh / "metrics" / "eval.json").read_text())
    assert evaluation["test"]["iw_nll"] == pytest.approx(best.value, rel=1e-9)


@pytest.mark.team
@pytest.mark.slow
def test_a_killed_worker_s_trial_fails_and_is_retried_and_the_study_completes(team, team_project, clones, tmp_path,
                                                                              monkeypatch):
    url = team.server.search_storage().replace("postgresql://", "postgresql+psycopg2://")
    for root in clones:
        with_study(root, study="killed", algorithm="grid", n_trials=2, space={"train.beta": [0.75, 1.5]})
    victim = worker(clones[0], team, tmp_path / "victim.log")
    def training():
        assert victim.poll() is None, (tmp_path / "victim.log").read_text()  # a worker that stopped early fails at once
        logs = (clones[0] / "search-logs").glob("killed-*.log") if (clones[0] / "search-logs").is_dir() else []
        return any("Running stage 'train'" in p.read_text() for p in logs)

    try:
        wait_for(training, "the victim's training", timeout=1200)
    finally:
        os.killpg(victim.pid, signal.SIGKILL)  # the worker, its dvc exp run and the stage: a host going down
        victim.wait()
    [killed_log] = list((clones[0] / "search-logs").glob("killed-*.log"))
    killed = int(killed_log.stem.split("-")[1])
    survivor = worker(clones[1], team, tmp_path / "survivor.log")
    try:
        survivor.wait(timeout=2400)
    finally:
        if survivor.poll() is None:
            os.killpg(survivor.pid, signal.SIGKILL)
    log = (tmp_path / "survivor.log").read_text()
    assert survivor.returncode == 0, log
    monkeypatch.setenv("PGPASSFILE", str(team.server.pgpass))
    trials = {t.number: t for t in study_trials(clones[1], "killed", url)}
    assert sorted(t.state.name for t in trials.values()) == ["COMPLETE", "COMPLETE", "FAIL"], log
    assert trials[killed].state.name == "FAIL" and "fail_reason" not in trials[killed].user_attrs
    [retry] = [t for t in trials.values() if t.system_attrs.get("failed_trial") == killed]
    assert retry.state.name == "COMPLETE" and retry.params == trials[killed].params
    assert f"killed-{killed}" not in exp_names(clones[0]) + exp_names(clones[1])
    found = search_runs(team, team_project, "killed")
    assert sorted(r.data.tags["search_trial"] for r in found) == sorted(
        str(t.number) for t in trials.values() if t.state.name == "COMPLETE")
    assert all(r.info.status == "FINISHED" for r in found)  # the survivor left no RUNNING run
    shown = search_cli(clones[1], "status", MNIST_VAE_SEARCH_STORAGE=team.server.search_storage(),
                       PGPASSFILE=str(team.server.pgpass)).stdout
    assert "COMPLETE 2" in shown and "FAIL 1" in shown and f"trial {killed} FAIL: worker lost" in shown

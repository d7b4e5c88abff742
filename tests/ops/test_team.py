"""The team server for real: PostgreSQL (initdb/pg_ctl) and `mlflow server --app-name basic-auth` with proxied
artifacts, on free loopback ports in a temporary folder, started and stopped here."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest

from helpers.pipeline import (
    REPO,
    ran_stages,
    set_params,
    sh,
)
from helpers.team import (
    admin_client,
    client_as,
    client_env,
    clone,
    experiment_runs,
    no_secret_in_files,
)
from mnist_vae import load
from mnist_vae.errors import UserError
from mnist_vae.ops.team_server import (
    ENV_ADMIN_PASSWORD,
    Credentials,
    TeamServer,
    admin_from_env,
)

pytestmark = pytest.mark.team


def test_requests_without_credentials_or_with_a_wrong_password_are_refused(team):
    path = "experiments/search?max_results=1"
    assert team.server.api("GET", path, None)[0] == 401
    assert team.server.api("GET", path, Credentials(team.admin.username, team.admin.password + "x"))[0] == 401
    assert team.server.api("GET", path, Credentials(team.user.username, team.admin.password))[0] == 401
    assert team.server.api("GET", path, team.user)[0] == 200
    assert team.server.api("GET", path, team.admin)[0] == 200


def test_a_user_cannot_delete_the_admins_experiment_but_manages_their_own(team):
    api, admin, alice = team.server.api, team.admin, team.user
    status, body = api("POST", "experiments/create", admin, {"name": "admins-" + secrets.token_hex(4)})
    assert status == 200
    theirs = body["experiment_id"]
    assert api("GET", f"experiments/get?experiment_id={theirs}", alice)[0] == 200  # default permission: READ
    assert api("POST", "experiments/delete", alice, {"experiment_id": theirs})[0] == 403
    assert api("POST", "runs/create", alice, {"experiment_id": theirs})[0] == 403
    assert api("GET", f"experiments/get?experiment_id={theirs}", admin)[1]["experiment"]["lifecycle_stage"] == "active"
    status, body = api("POST", "experiments/create", alice, {"name": "alices-" + secrets.token_hex(4)})
    assert status == 200
    assert api("POST", "runs/create", alice, {"experiment_id": body["experiment_id"]})[0] == 200
    assert api("POST", "experiments/delete", alice, {"experiment_id": body["experiment_id"]})[0] == 200


def test_the_admin_password_comes_from_the_environment_and_is_never_written(team, monkeypatch):
    monkeypatch.setenv(ENV_ADMIN_PASSWORD, "password1234")
    with pytest.raises(UserError, match="old default"):
        admin_from_env()
    monkeypatch.delenv(ENV_ADMIN_PASSWORD)
    with pytest.raises(UserError, match=ENV_ADMIN_PASSWORD):
        admin_from_env()
    # a different password than the one the admin was created with is refused, not silently accepted
    with pytest.raises(UserError, match="does not match"):
        team.server.ensure_users(Credentials(team.admin.username, "another-password-123"), None)
    # nothing the server owns holds either password: config, state, logs, PostgreSQL's log
    for path in team.root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert team.admin.password.encode() not in data, path
            assert team.user.password.encode() not in data, path


def test_start_without_an_admin_password_says_so_in_one_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MNIST_VAE_")}
    env["PYTHONPATH"] = str(REPO / "src")
    proc = subprocess.run([sys.executable, "-m", "mnist_vae.ops.team_server", "start", "--dir", str(tmp_path / "t")],
                          capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"team-server: error: set {ENV_ADMIN_PASSWORD} (at least 12 characters) to the admin's password"]
    assert not (tmp_path / "t").exists()


def test_without_postgresql_start_says_how_to_install_it(monkeypatch, tmp_path):
    import mnist_vae.ops.team_server as team_server

    monkeypatch.setattr(team_server.shutil, "which", lambda name: None)
    monkeypatch.setattr(team_server.glob, "glob", lambda pattern: [])
    assert team_server.find_pg_bin() is None
    with pytest.raises(UserError, match=r"apt-get install -y postgresql"):
        TeamServer(tmp_path / "t").start_postgres()


def test_runs_and_artifacts_survive_restarting_postgres_and_the_server(team, monkeypatch, tmp_path):
    client = client_as(team, team.user, monkeypatch)
    experiment = client.create_experiment("restart-" + secrets.token_hex(4))
    run = client.create_run(experiment, tags={"purpose": "restart"})
    run_id = run.info.run_id
    client.log_param(run_id, "train.beta", "4")
    for step, value in enumerate([3.5, 2.25, 1.125], start=1):
        client.log_metric(run_id, "train_total", value, step=step)
    blob = tmp_path / "figures" / "weights.bin"
    blob.parent.mkdir()
    blob.write_bytes(os.urandom(200_000))
    client.log_artifact(run_id, str(blob), "figures")
    client.set_terminated(run_id, "FINISHED")
    # proxied: the bytes sit in the server's artifact folder, and the run only names the server's scheme
    assert run.info.artifact_uri.startswith("mlflow-artifacts:")
    assert [p.read_bytes() for p in team.server.artifacts.rglob("weights.bin")] == [blob.read_bytes()]

    team.server.stop_mlflow()
    team.server.stop_postgres()
    assert not team.server.pg_running() and team.server.mlflow_pid() is None
    team.server.start_postgres()
    team.server.start_mlflow(team.admin)

    back = client.get_run(run_id)
    assert back.info.status == "FINISHED"
    assert back.data.params == {"train.beta": "4"} and back.data.tags["purpose"] == "restart"
    history = client.get_metric_history(run_id, "train_total")
    assert [(m.step, m.value) for m in history] == [(1, 3.5), (2, 2.25), (3, 1.125)]
    fetched = Path(client.download_artifacts(run_id, "figures/weights.bin", str(tmp_path / "back")))
    assert fetched.read_bytes() == blob.read_bytes()
    # the users live in PostgreSQL too: both still log in, a wrong password still does not
    assert team.server.api("GET", "experiments/search?max_results=1", team.user)[0] == 200
    assert team.server.api("GET", "experiments/search?max_results=1", Credentials("alice", "nope-nope-nope"))[0] == 401


# --------------------------------------------------------------------------- the pipeline against the server
# Clones of a small-data copy of this project, each with the same bare git remote and DVC remote, running
# `dvc exp run` and `dvc repro` against the team server with only the three MLFLOW_TRACKING_* variables set.




@pytest.fixture(scope="module")
def two_runs(team, team_project):
    """Two clones, one as the non-admin user and one as the admin, each running one experiment at the same
    time against the server, then pushing it (git refs to origin, outputs to the DVC remote)."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    jobs = {}
    for name, who, beta in (("exp-a", team.user, "0.5"), ("exp-b", team.admin, "4")):
        root = clone(team_project, "clone-" + name)
        cmd = ["dvc", "exp", "run", "-n", name, "-S", f"train.beta={beta}"]
        print(f"[{name}] $ MLFLOW_TRACKING_USERNAME={who.username} {' '.join(cmd)}   (in {root.name})")
        proc = subprocess.Popen(cmd, cwd=root, env={**env, **client_env(team, who)}, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        jobs[name] = (root, who, proc, time.monotonic())
    done = {}
    for name, (root, who, proc, started) in jobs.items():
        out, err = proc.communicate(timeout=600)
        done[name] = types.SimpleNamespace(root=root, who=who, out=out, err=err, code=proc.returncode,
                                           seconds=time.monotonic() - started)
        print(f"[{name}] exit {proc.returncode} after {done[name].seconds:.0f} s; stages {ran_stages(out)}")
        print("\n".join(f"[{name}] {line}" for line in (out + err).splitlines() if line.startswith("track:")))
    for name, job in done.items():
        assert job.code == 0, f"{name}:\n{job.out}\n{job.err}"
        pushed = sh("dvc", "exp", "push", "origin", name, cwd=job.root, **client_env(team, job.who))
        print(f"[{name}] $ dvc exp push origin {name}\n" + pushed.stdout.strip())
    return done


def test_two_clones_run_experiments_at_the_same_time_on_the_server(team, team_project, two_runs, tmp_path,
                                                                   monkeypatch):
    runs = experiment_runs(team, team_project.experiment)
    assert sorted((r.data.tags.get("dvc_exp_name"), r.info.status, r.data.params["train.beta"]) for r in runs) == [
        ("exp-a", "FINISHED", "0.5"), ("exp-b", "FINISHED", "4.0")]
    by_name = {r.data.tags["dvc_exp_name"]: r for r in runs}
    import mlflow
    import mlflow.tracking._tracking_service.utils

    with admin_client(team) as client:
        for name, run in by_name.items():
            assert [m.step for m in client.get_metric_history(run.info.run_id, "training/train_total")] == [1, 2]
            assert "test/nelbo" in run.data.metrics and "test/iw_nll" in run.data.metrics
            local = two_runs[name].root / "reports" / "figures" / "samples.png"
            fetched = client.download_artifacts(run.info.run_id, "figures/samples.png", str(tmp_path / name))
            assert Path(fetched).read_bytes() == local.read_bytes()  # through the server's proxied store
            assert run.info.artifact_uri.startswith("mlflow-artifacts:")
        # the logged models sit in the team's experiment, beside their runs (not in Default)
        logged = client.search_logged_models(experiment_ids=[runs[0].info.experiment_id])
        assert sorted(m.source_run_id for m in logged) == sorted(r.info.run_id for r in runs)
        versions = client.search_model_versions(f"name = '{team_project.model}'")
        assert sorted(v.run_id for v in versions) == sorted(r.info.run_id for r in runs)
        # the server for models:/ URIs, for this test only (mlflow.set_tracking_uri would outlive it)
        monkeypatch.setenv("MLFLOW_TRACKING_URI", team.url)
        monkeypatch.setattr(mlflow.tracking._tracking_service.utils, "_tracking_uri", team.url)
        model = load(f"models:/{team_project.model}/{max(int(v.version) for v in versions)}")
        assert model.vae.sample(2).shape == (2, 784)


def test_credentials_land_nowhere(team, team_project, two_runs):
    passwords = (team.admin.password, team.user.password)
    for name, job in two_runs.items():
        no_secret_in_files(job.root, *passwords)  # params.yaml, dvc.lock, .dvc/config, git objects, caches
        assert not any(p in job.out + job.err for p in passwords)
    no_secret_in_files(team_project.origin, *passwords)
    no_secret_in_files(team_project.remote, *passwords)
    no_secret_in_files(team.root, *passwords)  # the server's own logs and config
    for run in experiment_runs(team, team_project.experiment):
        values = " ".join([*run.data.params.values(), *run.data.tags.values()])
        assert not any(p in values for p in passwords)


def test_a_teammate_pulls_an_experiment_and_gets_its_result_without_training(team, team_project, two_runs):
    runs = {r.data.tags["dvc_exp_name"]: r for r in experiment_runs(team, team_project.experiment)}
    root = clone(team_project, "clone-c-" + secrets.token_hex(2))
    env = client_env(team, team.user)
    sh("dvc", "exp", "pull", "origin", "exp-a", cwd=root, **env)
    sh("dvc", "exp", "apply", "exp-a", cwd=root, **env)
    sh("dvc", "pull", cwd=root, **env)
    before = {r.info.run_id for r in experiment_runs(team, team_project.experiment)}
    assert ran_stages(sh("dvc", "repro", cwd=root, **env).stdout) == []  # nothing trains, nothing is logged
    forced = sh("dvc", "repro", "--single-item", "--force", "track", cwd=root, **env)  # track alone
    assert ran_stages(forced.stdout) == ["track"]
    assert f"already run {runs['exp-a'].info.run_id}" in forced.stdout + forced.stderr  # found by its fingerprint
    assert {r.info.run_id for r in experiment_runs(team, team_project.experiment)} == before
    shown = json.loads(sh("dvc", "metrics", "show", "--json", cwd=root).stdout)
    local = next(iter(shown.values()))["data"]["metrics/headline.json"]["data"]
    server = runs["exp-a"].data.metrics
    assert local["test_nelbo"] == pytest.approx(server["test_nelbo"], rel=1e-12)
    assert local["test_nll_iwae"] == pytest.approx(server["test/iw_nll"], rel=1e-12)


def test_track_fails_in_one_line_while_the_server_is_down_and_logs_once_when_it_is_back(team, team_project):
    root = clone(team_project, "clone-d-" + secrets.token_hex(2))
    env = client_env(team, team.user)
    set_params(root, train={"beta": 2.0})
    before = {r.info.run_id for r in experiment_runs(team, team_project.experiment)}
    proc = subprocess.Popen(["dvc", "repro"], cwd=root, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
                                 **env})
    try:
        deadline = time.monotonic() + 300
        while not (root / "data" / "processed" / "test.npz").is_file() and proc.poll() is None:
            assert time.monotonic() < deadline, "dequantize never finished"
            time.sleep(0.2)
        team.server.stop_mlflow()  # mid-pipeline: the data are ready, training has not finished
        out, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
        team.server.start_mlflow(team.admin)
    failed = types.SimpleNamespace(returncode=proc.returncode, stdout=out, stderr=err)
    assert failed.returncode != 0
    said = [line for line in (failed.stdout + failed.stderr).splitlines() if line.startswith("track:")]
    assert len(said) == 1 and said[0].startswith(f"track: error: MLflow store {team.url} failed"), said
    assert "Traceback" not in failed.stdout + failed.stderr
    for path in ("models/vae.pt", "metrics/history.csv", "metrics/eval.json", "reports/figures/samples.png"):
        assert (root / path).is_file(), path
    status = json.loads(sh("dvc", "status", "--json", cwd=root).stdout)
    assert list(status) == ["track"], status  # train, evaluate and render are done and recorded
    again = sh("dvc", "repro", cwd=root, **env).stdout
    assert ran_stages(again) == ["track"]
    new = [r for r in experiment_runs(team, team_project.experiment) if r.info.run_id not in before]
    assert [(r.info.status, r.data.params["train.beta"]) for r in new] == [("FINISHED", "2.0")]
    assert ran_stages(sh("dvc", "repro", cwd=root, **env).stdout) == []
    assert len(experiment_runs(team, team_project.experiment)) == len(before) + 1

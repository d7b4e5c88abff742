"""The team server for real: PostgreSQL (initdb/pg_ctl) and `mlflow server --app-name basic-auth` with proxied
artifacts, on free loopback ports in a temporary folder, started and stopped here."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import types
from pathlib import Path

import pytest

from mnist_vae.errors import UserError
from mnist_vae.team_server import (ENV_ADMIN_PASSWORD, INSTALL_HINT, Credentials, TeamServer, admin_from_env,
                                   find_pg_bin, free_port)

pytestmark = pytest.mark.team
REPO = Path(__file__).resolve().parents[1]


def require_postgres() -> None:
    """Skip with how to install PostgreSQL when it is missing; in CI (CI=true) fail instead."""
    if find_pg_bin() is None:
        message = f"PostgreSQL (pg_ctl) not found: {INSTALL_HINT}"
        if os.environ.get("CI") == "true":
            pytest.fail(message + " (.ci/run installs it under CI=true)", pytrace=False)
        pytest.skip(message)


def start_team_server(**kwargs) -> types.SimpleNamespace:
    """A running team server in a fresh folder under /tmp (the `postgres` user cannot enter pytest's
    0700 temporary folders when we run as root), with a generated admin and a non-admin user."""
    require_postgres()
    root = Path(tempfile.mkdtemp(prefix="mnist-vae-team-"))
    server = TeamServer(root, port=free_port(), pg_port=free_port(), workers=1, **kwargs)
    admin = Credentials("admin", "admin-" + secrets.token_urlsafe(16))
    user = Credentials("alice", "alice-" + secrets.token_urlsafe(16))
    try:
        server.start(admin, user)
    except BaseException:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
        raise
    return types.SimpleNamespace(server=server, admin=admin, user=user, root=root, url=server.url)


def stop_team_server(team) -> None:
    team.server.stop()
    shutil.rmtree(team.root, ignore_errors=True)


@pytest.fixture(scope="module")
def team():
    """One server for the tests that only read it or create their own, uniquely named, objects."""
    running = start_team_server()
    yield running
    stop_team_server(running)


def client_as(team, who: Credentials, monkeypatch):
    """An MlflowClient that authenticates as `who` through the environment, as a teammate's shell would."""
    from mlflow import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", who.username)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", who.password)
    return MlflowClient(tracking_uri=team.url)


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
    proc = subprocess.run([sys.executable, "-m", "mnist_vae.team_server", "start", "--dir", str(tmp_path / "t")],
                          capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"team-server: error: set {ENV_ADMIN_PASSWORD} (at least 12 characters) to the admin's password"]
    assert not (tmp_path / "t").exists()


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

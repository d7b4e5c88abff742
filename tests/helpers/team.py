"""The team server in tests: a real PostgreSQL and MLflow team server on free loopback ports (the `team`
fixture, one per test module), clients of it, and a small project pushed to a git and a DVC remote (`project`)."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import tempfile
import types
from pathlib import Path

import pytest

from helpers.pipeline import REPO, sh, write_small_params
from mnist_vae.ops.team_server import INSTALL_HINT, Credentials, TeamServer, find_pg_bin, free_port


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


def client_env(team, who: Credentials) -> dict[str, str]:
    return {"MLFLOW_TRACKING_URI": team.url, "MLFLOW_TRACKING_USERNAME": who.username,
            "MLFLOW_TRACKING_PASSWORD": who.password}


@contextlib.contextmanager
def admin_client(team):
    """An MlflowClient on the server as the admin (MLflow reads the credentials from the environment)."""
    from mlflow import MlflowClient

    keys = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
    saved = {k: os.environ.get(k) for k in keys}
    os.environ.update(zip(keys, (team.admin.username, team.admin.password)))
    try:
        yield MlflowClient(tracking_uri=team.url)
    finally:
        for key, value in saved.items():
            os.environ.pop(key) if value is None else os.environ.__setitem__(key, value)


def experiment_runs(team, experiment: str) -> list:
    with admin_client(team) as client:
        exp = client.get_experiment_by_name(experiment)
        return client.search_runs([exp.experiment_id], order_by=["attributes.start_time"]) if exp else []


def no_secret_in_files(root: Path, *secrets_: str) -> None:
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            for secret in secrets_:
                assert secret.encode() not in data, f"a password is in {path}"


@pytest.fixture(scope="module")
def team_project(team, tmp_path_factory):
    """A small-data copy of this repository pushed to a bare git remote, with a DVC remote (a shared folder),
    and the team's experiment and registered model shared with the non-admin user."""
    base = tmp_path_factory.mktemp("team-project")
    seed, origin, remote = base / "seed", base / "origin.git", base / "dvc-remote"
    for rel in sh("git", "ls-files", "--cached", "--others", "--exclude-standard", cwd=REPO).stdout.split():
        if (REPO / rel).is_file():
            (seed / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, seed / rel)
    experiment, model = "team-" + secrets.token_hex(3), "team-vae-" + secrets.token_hex(3)
    write_small_params(seed, train={"epochs": 2, "batch_size": 64},
                       evaluate={"iw_samples": 5, "train_slice": 100, "mi_examples": 50},
                       render={"latent_points": 100, "samples_grid": 3},
                       tracking={"experiment": experiment, "registered_model": model})
    remote.mkdir()
    sh("git", "init", "-q", "-b", "main", cwd=seed)
    sh("dvc", "remote", "add", "-d", "shared", str(remote), cwd=seed)
    sh("git", "add", "-A", cwd=seed)
    sh("git", "-c", "user.name=lead", "-c", "user.email=lead@team", "commit", "-qm", "project", cwd=seed)
    sh("git", "init", "-q", "--bare", "-b", "main", str(origin), cwd=base)
    sh("git", "push", "-q", str(origin), "main", cwd=seed)
    team.server.share(team.admin, team.user.username, experiment, model)
    return types.SimpleNamespace(base=base, origin=origin, remote=remote, experiment=experiment, model=model)


def clone(team_project, name: str) -> Path:
    dest = team_project.base / name
    sh("git", "clone", "-q", str(team_project.origin), str(dest), cwd=team_project.base)
    for key, value in (("user.name", name), ("user.email", f"{name}@team")):
        sh("git", "config", key, value, cwd=dest)
    return dest



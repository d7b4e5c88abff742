"""The team server: PostgreSQL as MLflow's store, `mlflow server` with proxied artifacts and basic auth.

One folder holds everything the server owns::

    DIR/postgres/        the PostgreSQL cluster (initdb; owned by the `postgres` user when run as root)
    DIR/artifacts/       the proxied artifact store (clients reach it through the server only)
    DIR/secrets/         generated: the `mlflow` database role's password (pgpass) and the UI's CSRF key
    DIR/auth.ini         MLflow's basic-auth config: its user database on the same PostgreSQL
    DIR/server.json      ports and host, so a restart reuses them
    DIR/mlflow.log, DIR/mlflow.pid

Credentials come from the environment and are handed to the server in its environment only (never on
a command line, in a file under DIR, or in a log): ``MNIST_VAE_ADMIN_PASSWORD`` (required, at least 12
characters; MLflow refuses the old default ``password1234``), ``MNIST_VAE_ADMIN_USERNAME`` (default
``admin``), and a non-admin user ``MNIST_VAE_USER_USERNAME`` / ``MNIST_VAE_USER_PASSWORD``.

    python -m mnist_vae.ops.team_server start --dir DIR [--host 127.0.0.1] [--port 5000]
    python -m mnist_vae.ops.team_server stop --dir DIR
    python -m mnist_vae.ops.team_server status --dir DIR
    python -m mnist_vae.ops.team_server share --dir DIR --user alice [--experiment mnist-vae] [--model mnist-vae]
"""

from __future__ import annotations

import base64
import glob
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from mnist_vae.errors import UserError

PG_ROLE = "mlflow"
# tracking + registry store, basic-auth's users, and the hyperparameter searches' Optuna studies (mnist-vae search)
PG_DATABASES = ("mlflow", "mlflow_auth", "optuna")
AUTH_CACHE_TTL_S = 60
DEFAULT_PERMISSION = "READ"  # everyone reads every experiment; writes need ownership or a grant
INSTALL_HINT = "install PostgreSQL (Debian/Ubuntu: apt-get install -y postgresql)"
ENV_ADMIN_USER, ENV_ADMIN_PASSWORD = "MNIST_VAE_ADMIN_USERNAME", "MNIST_VAE_ADMIN_PASSWORD"
ENV_USER, ENV_USER_PASSWORD = "MNIST_VAE_USER_USERNAME", "MNIST_VAE_USER_PASSWORD"


def find_pg_bin() -> Path | None:
    """The folder of PostgreSQL's server programs: pg_ctl on PATH, else Debian's /usr/lib/postgresql/N/bin."""
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"),
                        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    return Path(candidates[-1]).parent if candidates else None


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@dataclass
class Credentials:
    username: str
    password: str

    def header(self) -> str:
        return "Basic " + base64.b64encode(f"{self.username}:{self.password}".encode()).decode()


def admin_from_env(env=os.environ) -> Credentials:
    password = env.get(ENV_ADMIN_PASSWORD, "")
    if not password:
        raise UserError(f"set {ENV_ADMIN_PASSWORD} (at least 12 characters) to the admin's password")
    if len(password) < 12 or password == "password1234":
        raise UserError(f"{ENV_ADMIN_PASSWORD} must have at least 12 characters and not be MLflow's old default")
    return Credentials(env.get(ENV_ADMIN_USER) or "admin", password)


def user_from_env(env=os.environ) -> Credentials | None:
    username, password = env.get(ENV_USER, ""), env.get(ENV_USER_PASSWORD, "")
    if not username:
        return None
    if len(password) < 12:
        raise UserError(f"{ENV_USER} is set: set {ENV_USER_PASSWORD} too (at least 12 characters)")
    return Credentials(username, password)


class TeamServer:
    """The two processes over one folder; every method is safe to call again (start on a running server
    does nothing, stop on a stopped one does nothing)."""

    def __init__(self, root: os.PathLike | str, host: str | None = None, port: int | None = None,
                 pg_port: int | None = None, workers: int = 2):
        self.root = Path(root).resolve()
        saved = json.loads(self.state_file.read_text()) if self.state_file.is_file() else {}
        self.host = host or saved.get("host", "127.0.0.1")
        self.port = port or saved.get("port") or 5000
        self.pg_port = pg_port or saved.get("pg_port") or free_port()
        self.workers = workers
        self.pg_bin = find_pg_bin()

    # ------------------------------------------------------------------ paths
    state_file = property(lambda self: self.root / "server.json")
    pg_data = property(lambda self: self.root / "postgres")
    pgpass = property(lambda self: self.root / "secrets" / "pgpass")
    flask_key = property(lambda self: self.root / "secrets" / "flask_secret_key")
    auth_ini = property(lambda self: self.root / "auth.ini")
    artifacts = property(lambda self: self.root / "artifacts")
    log = property(lambda self: self.root / "mlflow.log")
    pid_file = property(lambda self: self.root / "mlflow.pid")

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        return f"http://{host}:{self.port}"

    def db_uri(self, database: str) -> str:
        # no password here: libpq reads it from PGPASSFILE, which only the server's environment names
        return f"postgresql+psycopg2://{PG_ROLE}@127.0.0.1:{self.pg_port}/{database}"

    # ------------------------------------------------------------------ PostgreSQL
    def _pg(self, program: str, *args: str, input: str | None = None) -> subprocess.CompletedProcess:
        """Run a PostgreSQL program as its owner (`postgres` when we are root: initdb refuses root)."""
        if self.pg_bin is None:
            raise UserError(f"PostgreSQL's pg_ctl is not on PATH nor in /usr/lib/postgresql/*/bin; {INSTALL_HINT}")
        cmd = [str(self.pg_bin / program), *args]
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        proc = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=120,
                              env={**os.environ, "LC_ALL": "C"})
        if proc.returncode != 0:
            detail = (proc.stderr.strip() or proc.stdout.strip()).splitlines() or ["no output"]
            raise UserError(f"{program} failed: {detail[-1]}")
        return proc

    def pg_running(self) -> bool:
        if not (self.pg_data / "PG_VERSION").is_file():
            return False
        try:
            self._pg("pg_ctl", "status", "-D", str(self.pg_data))
        except UserError:
            return False
        return True

    def _init_pg(self) -> None:
        self.pg_data.mkdir(parents=True)
        if os.geteuid() == 0:
            shutil.chown(self.pg_data, "postgres", "postgres")
        self.pg_data.chmod(0o700)
        self._pg("initdb", "-D", str(self.pg_data), "-E", "UTF8", "--no-locale",
                 "--auth-local=peer", "--auth-host=scram-sha-256")

    def start_postgres(self) -> None:
        first = not (self.pg_data / "PG_VERSION").is_file()
        if first:
            if self.pg_data.exists():
                raise UserError(f"{self.pg_data} exists but holds no PostgreSQL cluster; remove it or pick another --dir")
            self._init_pg()
        if not self.pg_running():
            options = f"-p {self.pg_port} -k {self.pg_data} -c listen_addresses=127.0.0.1"
            self._pg("pg_ctl", "-D", str(self.pg_data), "-o", options, "-l", str(self.pg_data / "server.log"),
                     "-w", "-t", "60", "start")
        if first or not self.pgpass.is_file():
            self._create_role_and_databases()
        else:
            self._create_databases()  # a server made before a database was added gets it

    def _write_secret(self, path: Path, text: str) -> None:
        path.parent.mkdir(mode=0o700, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)

    def _flask_secret_key(self) -> str:
        """The key that signs the UI's CSRF tokens: made once, kept so sessions survive restarts."""
        if not self.flask_key.is_file():
            self._write_secret(self.flask_key, secrets.token_urlsafe(32))
        return self.flask_key.read_text()

    def _create_role_and_databases(self) -> None:
        password = secrets.token_urlsafe(24)
        self._write_secret(self.pgpass, f"127.0.0.1:*:*:{PG_ROLE}:{password}\n")
        exists = self._psql(f"SELECT 1 FROM pg_roles WHERE rolname = '{PG_ROLE}'").stdout.strip()
        verb = "ALTER" if exists else "CREATE"
        self._psql(f"{verb} ROLE {PG_ROLE} LOGIN PASSWORD '{password}'")  # on stdin, never argv
        self._create_databases()

    def _create_databases(self) -> None:
        for db in PG_DATABASES:
            if not self._psql(f"SELECT 1 FROM pg_database WHERE datname = '{db}'").stdout.strip():
                self._psql(f"CREATE DATABASE {db} OWNER {PG_ROLE}")

    def _psql(self, sql: str) -> subprocess.CompletedProcess:
        return self._pg("psql", "-h", str(self.pg_data), "-p", str(self.pg_port), "-d", "postgres",
                        "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", input=sql + ";\n")

    def stop_postgres(self) -> None:
        if self.pg_running():
            self._pg("pg_ctl", "-D", str(self.pg_data), "-m", "fast", "-w", "-t", "60", "stop")

    # ------------------------------------------------------------------ MLflow
    def mlflow_pid(self) -> int | None:
        """The recorded server's pid, if that process is alive and is an mlflow server."""
        try:
            pid = int(self.pid_file.read_text())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            return None
        return pid if b"mlflow" in cmdline and b"server" in cmdline else None

    def _write_auth_ini(self) -> None:
        # no password in here: the admin's comes from MLFLOW_AUTH_ADMIN_PASSWORD in the server's environment
        text = (
            "[mlflow]\n"
            f"default_permission = {DEFAULT_PERMISSION}\n"
            f"database_uri = {self.db_uri('mlflow_auth')}\n"
            "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
            # a password check is a deliberately slow hash (seconds on a busy 2-core box); cache a
            # successful one per worker. A password change reaches other workers within this TTL.
            f"auth_cache_ttl_seconds = {AUTH_CACHE_TTL_S}\n"
        )
        self.auth_ini.write_text(text)
        self.auth_ini.chmod(0o600)

    def start_mlflow(self, admin: Credentials, timeout: float = 180) -> None:
        if self.mlflow_pid():
            return
        self.artifacts.mkdir(parents=True, exist_ok=True)
        self._write_auth_ini()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "MNIST_VAE_"))}
        env.update(MLFLOW_AUTH_CONFIG_PATH=str(self.auth_ini), PGPASSFILE=str(self.pgpass),
                   MLFLOW_AUTH_ADMIN_USERNAME=admin.username, MLFLOW_AUTH_ADMIN_PASSWORD=admin.password,
                   MLFLOW_FLASK_SERVER_SECRET_KEY=self._flask_secret_key(), MLFLOW_DISABLE_TELEMETRY="true")
        cmd = [sys.executable, "-m", "mlflow", "server", "--app-name", "basic-auth",
               "--backend-store-uri", self.db_uri("mlflow"),
               "--serve-artifacts", "--artifacts-destination", str(self.artifacts),
               "--host", self.host, "--port", str(self.port), "--workers", str(self.workers)]
        with open(self.log, "ab") as log:
            proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)  # its own process group: stop() ends all its workers
        self.pid_file.write_text(f"{proc.pid}\n")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise UserError(f"mlflow server exited during start-up ({proc.returncode}); see {self.log}")
            if self._healthy():
                return
            time.sleep(0.3)
        self.stop_mlflow()
        raise UserError(f"mlflow server did not answer on {self.url} within {timeout:.0f} s; see {self.log}")

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=2) as resp:
                return resp.status == 200
        except (OSError, urllib.error.URLError):
            return False

    def stop_mlflow(self, timeout: float = 30) -> None:
        pid = self.mlflow_pid()
        if pid is None:
            return
        os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
            try:  # reap it if it is our child
                if os.waitpid(pid, os.WNOHANG)[0] == pid:
                    break
            except ChildProcessError:
                pass
            time.sleep(0.2)
        else:
            if Path(f"/proc/{pid}").exists():
                os.killpg(pid, signal.SIGKILL)
        self.pid_file.unlink(missing_ok=True)

    # ------------------------------------------------------------------ users
    def api(self, method: str, path: str, who: Credentials | None, body: dict | None = None) -> tuple[int, dict]:
        """One REST call to the server; (HTTP status, JSON body)."""
        data = json.dumps(body).encode() if body is not None else None
        url = f"{self.url}{path}" if path.startswith("/") else f"{self.url}/api/2.0/mlflow/{path}"
        req = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        if who:
            req.add_header("Authorization", who.header())
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                status, raw = resp.status, resp.read()
        except urllib.error.HTTPError as err:
            status, raw = err.code, err.read()
        try:
            return status, json.loads(raw or b"{}")
        except ValueError:
            return status, {"text": raw.decode(errors="replace")[:200]}

    def ensure_users(self, admin: Credentials, user: Credentials | None) -> None:
        status, _ = self.api("GET", f"users/get?username={quote(admin.username)}", admin)
        if status == 401:
            raise UserError(f"{ENV_ADMIN_PASSWORD} does not match the admin password stored on this server "
                            "(it sets the password only when the admin is first created)")
        if status != 200:
            raise UserError(f"the server refused the admin's user lookup (HTTP {status})")
        if user is None:
            return
        status, body = self.api("POST", "users/create", admin, {"username": user.username, "password": user.password})
        if status == 200:
            return
        if body.get("error_code") == "RESOURCE_ALREADY_EXISTS":  # the environment is the source of truth
            status, body = self.api("PATCH", "users/update-password", admin,
                                    {"username": user.username, "password": user.password})
        if status != 200:
            raise UserError(f"could not create user {user.username!r} (HTTP {status}: {body.get('message', '')})")

    def share(self, admin: Credentials, username: str, experiment: str, model: str) -> str:
        """Create the team's experiment and registered model (if new) and let `username` log runs and
        model versions there (EDIT). With default_permission READ, only an object's creator, a grantee or
        an admin may write to it. Returns the experiment's id."""
        status, body = self.api("GET", f"experiments/get-by-name?experiment_name={quote(experiment)}", admin)
        if status == 200:
            experiment_id = body["experiment"]["experiment_id"]
        else:
            status, body = self.api("POST", "experiments/create", admin, {"name": experiment})
            if status != 200:
                raise UserError(f"could not create experiment {experiment!r} (HTTP {status}: {body.get('message', '')})")
            experiment_id = body["experiment_id"]
        status, body = self.api("POST", "registered-models/create", admin, {"name": model})
        if status != 200 and body.get("error_code") != "RESOURCE_ALREADY_EXISTS":
            raise UserError(f"could not create registered model {model!r} (HTTP {status}: {body.get('message', '')})")
        for kind, resource in (("experiment", experiment_id), ("registered_model", model)):
            status, body = self.api("POST", "/api/3.0/mlflow/users/permissions/grant", admin,
                                    {"username": username, "resource_type": kind, "resource_id": resource,
                                     "permission": "EDIT"})
            if status != 200:
                raise UserError(f"could not grant {username!r} EDIT on {kind} {resource!r} "
                                f"(HTTP {status}: {body.get('message', '')})")
        return experiment_id

    # ------------------------------------------------------------------ the whole server
    def start(self, admin: Credentials, user: Credentials | None = None) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o711)  # the postgres user must reach DIR/postgres; nothing else is listable
        self.start_postgres()
        self.state_file.write_text(json.dumps({"host": self.host, "port": self.port, "pg_port": self.pg_port}) + "\n")
        self.start_mlflow(admin)
        self.ensure_users(admin, user)

    def stop(self) -> None:
        self.stop_mlflow()
        self.stop_postgres()

    def search_storage(self) -> str:
        """The searches' Optuna storage (MNIST_VAE_SEARCH_STORAGE), without its password: libpq reads that
        from PGPASSFILE (this server's secrets/pgpass on this host; a ~/.pgpass line on a worker host)."""
        return f"postgresql://{PG_ROLE}@127.0.0.1:{self.pg_port}/optuna"

    def status(self) -> str:
        mlflow = f"running (pid {self.mlflow_pid()}) on {self.url}" if self.mlflow_pid() else "stopped"
        pg = f"running on 127.0.0.1:{self.pg_port}" if self.pg_running() else "stopped"
        return (f"mlflow server: {mlflow}\npostgresql: {pg}\nsearch storage: MNIST_VAE_SEARCH_STORAGE="
                f"{self.search_storage()} with PGPASSFILE={self.pgpass}")

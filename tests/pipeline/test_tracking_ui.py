"""What a user sees of a tracked result in the MLflow UI, in a real browser.

`stages/track.py` logs a small result (test_tracking's tiny model) into a store in a git checkout; the
real `mlflow ui` serves that store on a free port of 127.0.0.1; headless Chromium, each time with a fresh
profile, opens the addresses track printed and the one `make ui` prints. Each page must be in the UI's
Model training view (MLflow 3 opens a fresh browser in its GenAI view, whose navigation has Overview,
Judges, Agent versions), and show the run's datasets and source, and the named model with its metrics.
Screenshots go to the test's folder (and to MNIST_VAE_SCREENSHOT_DIR if set).
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
import yaml

from helpers.pipeline import mlflow_ui
from helpers.tracking import git, run_track, write_track_inputs
from mnist_vae.files import sha256_file
from mnist_vae.ops.team_server import free_port
from mnist_vae.pipeline import mlflow_store

GENAI_NAVIGATION = ("Overview", "Judges", "Agent versions", "Evaluation runs")  # the sidebar of the GenAI view

pytestmark = pytest.mark.slow


@pytest.fixture
def tracked(root, tmp_path, monkeypatch):
    """A git checkout holding a small result at the pipeline's paths, logged by the track stage; returns
    (the lines track printed, the checkout's commit). The UI's port is chosen before track runs."""
    monkeypatch.setenv("MLFLOW_UI_PORT", str(free_port()))
    write_track_inputs(tmp_path)
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", "-A")
    git(tmp_path, "commit", "-qm", "a result")
    return run_track(tmp_path), git(tmp_path, "rev-parse", "HEAD")


@pytest.fixture
def ui(root, tracked):
    """`mlflow ui` over root's store on MLFLOW_UI_PORT (as `make ui` starts it); its base address."""
    with mlflow_ui(root, int(os.environ["MLFLOW_UI_PORT"])) as base:
        yield base


def printed(lines: list[str], pattern: str) -> str:
    [address] = [m.group(0) for line in lines if line.startswith("track: ")
                 for m in [re.search(r"http://\S+" + pattern + r"\S*", line)] if m]
    return address


def visit(launch_chromium, address: str, wanted: list[str], shot: Path):
    """Open `address` in a fresh browser, wait until the page shows every text in `wanted`, save a
    screenshot; returns the driver and the page's text."""
    from selenium.webdriver.support.ui import WebDriverWait

    driver = launch_chromium(1800, 1000)
    driver.get(address)
    try:
        WebDriverWait(driver, 180).until(lambda d: all(w in d.find_element("tag name", "body").text for w in wanted))
    finally:
        shot.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(shot))
        if os.environ.get("MNIST_VAE_SCREENSHOT_DIR"):
            folder = Path(os.environ["MNIST_VAE_SCREENSHOT_DIR"])
            folder.mkdir(parents=True, exist_ok=True)
            shutil.copy(shot, folder / shot.name)
    return driver, driver.find_element("tag name", "body").text


def grid_columns(driver) -> dict[str, str]:
    """Header -> cell of the first row of the page's table, an ag-grid that draws only the columns in
    view: closes the assistant panel, then scrolls the table across, reading the columns as they show."""
    from selenium.webdriver.support.ui import WebDriverWait

    def drawn() -> tuple[dict[str, str], bool]:
        return driver.execute_script("""
            const out = {};
            for (const h of document.querySelectorAll('.ag-header-cell[aria-colindex]')) {
                const i = h.getAttribute('aria-colindex');  // (the cells' col-id are HTML-escaped, the headers' not)
                const cell = document.querySelector(`.ag-row[row-index="0"] [aria-colindex="${i}"]`);
                if (cell) out[h.innerText.trim()] = cell.innerText.trim();
            }
            const bar = document.querySelector('.ag-body-horizontal-scroll-viewport');
            return [out, bar.scrollLeft + bar.clientWidth >= bar.scrollWidth - 1];""")

    driver.execute_script("document.querySelector('[data-assistant-ui] button[aria-label=Close]')?.click()")
    columns: dict[str, str] = {}
    while True:
        seen, at_end = drawn()
        columns.update(seen)
        if at_end:
            return columns
        left = driver.execute_script("const bar = document.querySelector('.ag-body-horizontal-scroll-viewport');"
                                     "bar.scrollLeft += bar.clientWidth / 2; return bar.scrollLeft;")
        # the grid has drawn the columns scrolled into view (or had them drawn already: then at least
        # the scroll has moved, and the next round reads them again)
        WebDriverWait(driver, 60).until(lambda d: drawn()[0].keys() != seen.keys() or drawn()[1] or left > 0)


def assert_training_view(driver):
    navigation = driver.find_element("css selector", "aside").text.splitlines()
    assert "Model registry" in navigation and "Runs" in navigation and "Models" in navigation, navigation
    assert not set(GENAI_NAVIGATION) & set(navigation), navigation


def test_the_addresses_track_and_make_ui_print_open_the_model_training_view(tracked, ui, tmp_path, launch_chromium):
    lines, commit = tracked
    shots = tmp_path / "screenshots"
    name = "vae-mlp-bernoulli-z2"
    train_digest = sha256_file(tmp_path / "data/processed/train.npz")[:16]

    # the run's page, at the address track printed
    driver, text = visit(launch_chromium, printed(lines, "/runs/"), ["Datasets", "mnist-train", "Logged models"],
                         shots / "run.png")
    assert_training_view(driver)
    assert f"mnist-train ({train_digest})" in text and "Training" in text  # the dataset input, its context
    assert re.search(r"Source\s+dvc\.yaml", text) and commit[:7] in text  # MLflow's source tags, with the commit
    metrics = driver.execute_script("return Array.from(document.querySelectorAll('tr, [role=row]'), r => r.innerText)")
    assert any("test_nll_iwae" in row and "99.25" in row and name in row for row in metrics), metrics  # linked

    # the experiment's Models tab, at the address track printed: the named model and its headline numbers
    driver, text = visit(launch_chromium, printed(lines, "/models"), [name], shots / "models.png")
    assert_training_view(driver)
    columns = grid_columns(driver)
    assert {"Status": "Ready", "test_nll_iwae": "99.25", "sample_fid": "12.5",
            "training/train_total": "150"}.items() <= columns.items(), columns  # the headline, the curves' last values
    assert columns["Model name"].endswith(name)
    assert not any(header.startswith("test/") for header in columns)  # the details are the run's
    driver.save_screenshot(str(shots / "models-metrics.png"))

    # the training runs, at the address `make ui` prints
    address = mlflow_store.experiment_address(yaml.safe_load((tmp_path / "params.yaml").read_text())["tracking"]["experiment"])
    assert address.endswith("/runs?workflowType=machine_learning")
    driver, text = visit(launch_chromium, address, ["matching run", "dvc.yaml"], shots / "runs.png")
    assert_training_view(driver)
    assert f"mnist-train ({train_digest})" in text and "tiny-vae" in text  # the Dataset and Models columns

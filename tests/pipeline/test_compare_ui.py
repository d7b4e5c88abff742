"""Comparing two settings in the MLflow UI, in a real browser, as docs/compare.md walks a user through it.

Two small results in one git checkout, each logged by the track stage: the committed params, then
`train.beta: 4.0` in the workspace (another model, so other digits). The real `mlflow ui` serves the store;
headless Chromium opens the runs table (the two runs' names), the Chart view (the image grid of
`samples/prior` with both runs' digits, each image loaded; the progress frames' step slider moved to the last
epoch) and the changed run's page (its description names the changed param). Screenshots go to the test's
folder and to MNIST_VAE_SCREENSHOT_DIR if set (docs/compare.md's pictures come from there).
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import time
import urllib.request
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest

from helpers.pipeline import REPO, mlflow_ui
from helpers.tracking import git, run_track, write_track_inputs
from mnist_vae.ops.team_server import free_port
from mnist_vae.params import Params
from mnist_vae.pipeline import ui_view

pytestmark = [pytest.mark.slow, pytest.mark.browser]

CARD = '//*[@data-testid="experiment-view-compare-runs-card"][.//h4[@title="{}"]]'
SECTION = '[data-testid="experiment-view-compare-runs-section-header"]'
STEP_BOX = 'input[type="number"][data-component-id="mlflow.experiment_tracking.common.line_smooth_slider"]'
NOTE = '[data-testid="note-editor-preview-content"]'
WIDTH, HEIGHT = 1500, 950


@pytest.fixture
def two_runs(root, tmp_path):
    """{run name: run id} of two results tracked in one checkout: the commit's, then train.beta=4.0."""
    import mlflow

    base = Params(model={"hidden_dims": [8], "latent_dim": 2}, tracking={"registered_model": "tiny-vae"})
    write_track_inputs(tmp_path, base)
    recent(tmp_path)
    git(tmp_path, "init", "-q", "-b", "main")
    git(tmp_path, "add", "-A")
    git(tmp_path, "commit", "-qm", "the baseline")
    run_track(tmp_path)
    write_track_inputs(tmp_path, base.model_copy(update={"train": base.train.model_copy(update={"beta": 4.0})}), seed=1)
    (tmp_path / "metrics/headline.json").write_text(json.dumps({"test_nll_iwae": 97.5, "sample_fid": 14.0}))
    recent(tmp_path)
    run_track(tmp_path)
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    [experiment] = [e for e in client.search_experiments() if e.name == base.tracking.experiment]
    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"])
    return experiment.experiment_id, {r.info.run_name: r.info.run_id for r in runs}, git(tmp_path, "rev-parse", "--short", "HEAD")


def recent(root: Path) -> None:
    """The history's epochs moved to end a minute ago (the runs table shows when a run started, and for how long)."""
    with open(root / "metrics/history.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    shift = time.time() - 60 - float(rows[-1]["time"])
    for row in rows:
        row["time"] = float(row["time"]) + shift
    with open(root / "metrics/history.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def shot(driver, folder: Path, name: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(folder / name))
    if os.environ.get("MNIST_VAE_SCREENSHOT_DIR"):
        out = REPO / os.environ["MNIST_VAE_SCREENSHOT_DIR"]  # a relative folder is the repository's
        out.mkdir(parents=True, exist_ok=True)
        shutil.copy(folder / name, out / name)


def loaded_images(driver, element) -> dict[str, list[dict]]:
    """run id -> the logged images (artifact path, natural width, address) an element shows."""
    found = driver.execute_script("return Array.from(arguments[0].querySelectorAll('img'), "
                                  "i => [i.src, i.complete ? i.naturalWidth : 0])", element)
    out: dict[str, list[dict]] = {}
    for src, width in found:
        query = parse_qs(urlparse(src).query)
        if urlparse(src).path.endswith("get-artifact") and "run_uuid" in query:
            out.setdefault(query["run_uuid"][0], []).append({"path": query["path"][0], "width": width, "src": src})
    return out


def scroll_to(driver, section: str) -> None:
    """Scroll the Chart view's section named `section` to the top of the view."""
    from selenium.webdriver.support.ui import WebDriverWait

    header = WebDriverWait(driver, 120).until(
        lambda d: next((h for h in d.find_elements("css selector", SECTION) if h.text.startswith(section)), False))
    driver.execute_script("arguments[0].scrollIntoView({block: 'start'})", header)


def wait_for_grid(driver, key: str, run_ids, step: int, section: str):
    """The image grid card of `key` once it shows a loaded image at `step` for every run; scrolls its
    section into view first (the UI draws cards only when they are in view)."""
    from selenium.webdriver.support.ui import WebDriverWait

    scroll_to(driver, section)

    def ready(d):
        cards = d.find_elements("xpath", CARD.format(key))
        if not cards:
            return False
        shown = loaded_images(d, cards[0])
        done = all(any(i["width"] > 0 and f"+step+{step}+" in i["path"] for i in shown.get(r, [])) for r in run_ids)
        return (cards[0], shown) if done else False

    return WebDriverWait(driver, 120, poll_frequency=0.25).until(ready)


def test_two_settings_side_by_side_in_the_image_grid_with_names_frames_and_description(
        two_runs, tmp_path, launch_chromium):
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    experiment_id, runs, commit = two_runs
    assert list(runs) == [f"main@{commit}", f"main@{commit} train.beta=4.0"]  # named by what tells them apart
    shots = tmp_path / "screenshots"
    with mlflow_ui(tmp_path, free_port()) as base:
        driver = launch_chromium(WIDTH, HEIGHT)
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                               {"width": WIDTH, "height": HEIGHT, "deviceScaleFactor": 1, "mobile": False})
        driver.get(f"{base}/health")  # the UI's origin, to close its assistant panel before the app starts
        driver.execute_script("localStorage.setItem('mlflow.assistant.panelOpen_v1', 'false');"
                              "localStorage.setItem('mlflow.assistant.fab.autoOpenedOnFirstLoad_v1', 'true');")
        runs_page = f"{base}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"

        # the runs table: each run under its name
        driver.get(f"{runs_page}&compareRunsMode=TABLE")
        for name in runs:
            WebDriverWait(driver, 120).until(lambda d, n=name: d.find_elements("xpath", f'//a[normalize-space()="{n}"]'))
        shot(driver, shots, "compare-runs-table.png")

        # the view track saved: the samples of both runs side by side, every image really served
        driver.get(f"{runs_page}&{ui_view.QUERY}")
        figures, frames = ui_view.SECTIONS["figures"], ui_view.SECTIONS["frames"]
        card, shown = wait_for_grid(driver, "samples/prior", runs.values(), 0, figures)
        for images in shown.values():
            for image in images:
                with urllib.request.urlopen(image["src"], timeout=30) as response:
                    assert response.status == 200 and response.read()
        assert all(name in card.text for name in runs), card.text  # each image under its run's name
        assert "model.latent_dim" not in card.text  # and not under a hundred params
        left = driver.execute_script("return Array.from(arguments[0].querySelectorAll('img'), i => i.getBoundingClientRect().left)", card)
        assert len(set(round(x) for x in left)) == len(runs), left  # next to each other, not one above the other
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", card)
        shot(driver, shots, "compare-image-grid.png")

        # the training's frames: the step slider from before the first epoch to the last
        card, _ = wait_for_grid(driver, "progress/samples", runs.values(), 0, frames)
        box = card.find_element("css selector", STEP_BOX)
        box.send_keys(Keys.CONTROL, "a")
        box.send_keys("2")
        driver.execute_script("arguments[0].blur()", box)  # the box commits its value on blur
        card, shown = wait_for_grid(driver, "progress/samples", runs.values(), 2, frames)
        assert card.find_element("css selector", '[role="slider"]').get_attribute("aria-valuenow") == "2"
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", card)  # its title in view too
        shot(driver, shots, "compare-progress-slider.png")

        # the changed run's page: its description names the param and the headline beside the commit's
        changed = runs[f"main@{commit} train.beta=4.0"]
        driver.get(f"{base}/#/experiments/{experiment_id}/runs/{changed}?workflowType=machine_learning")
        note = WebDriverWait(driver, 120).until(lambda d: d.find_element("css selector", NOTE))
        WebDriverWait(driver, 30).until(lambda d: "train.beta" in note.text)
        assert "train.beta 1.0 → 4.0" in note.text  # before "Show more"
        more = driver.find_elements("xpath", '//*[normalize-space(text())="Show more"]')
        if more:
            driver.execute_script("arguments[0].click()", more[0])
            WebDriverWait(driver, 30).until(lambda d: "test_nll_iwae" in note.text)
        shot(driver, shots, "compare-run-description.png")
        assert "train.beta" in note.text and "4" in note.text and "test_nll_iwae" in note.text, note.text

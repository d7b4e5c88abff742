"""The latent explorer (explorer.py and its page explorer.html).

The page is checked in a real browser: headless Chromium, driven by Selenium, opens the file and is
operated through its own controls (sliders, keys, buttons, the map, the gallery); the image the page
computes must equal the PyTorch decoder's for the same z, and the page must make no network request.
Without Chromium these tests skip, saying how to install it, except under CI=true where they fail.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
import yaml

from helpers.digits import FIXTURE_DIGITS as FIXTURE
from helpers.digits import REPO
from mnist_vae.files import save_npz, sha256_file
from mnist_vae.params import ModelParams, Params, SamplerParams
from mnist_vae.report import explorer
from mnist_vae.vae import evaluation, objectives, samplers
from mnist_vae.vae.model import VAE, save_checkpoint
from mnist_vae.vae.samplers import choice

TOLERANCE = 1e-4  # max |page - PyTorch| on the [0, 1] image, before 8-bit rounding
# what evaluate recorded: the mixture is the mlp page's best sampler, the VampPrior the vamp page's
MIXTURE_BEST = choice.Choice("gmm", {"prior": 1.0, "gmm": 1.0}, {"prior": 300.0, "gmm": 90.0})
PRIOR_BEST = choice.Choice("prior", {"prior": 1.0}, {"prior": 75.0})
WIDTH, HEIGHT = 1280, 800


# ------------------------------------------------------------------ models and pages


def fixture_digits(n: int = 300):
    with np.load(FIXTURE) as f:
        x = f["x_test"][:n].reshape(-1, 784).astype(np.float32) / 255
        return torch.from_numpy(x), f["y_test"][:n]


def make_model(architecture: str, **prior) -> VAE:
    """A random-initialised VAE made to look like a trained one where the page's checks need it: half the
    units' encoder means vary over the data (active), the rest do not, and the logits span about +-8."""
    if architecture == "mlp":
        config = ModelParams(architecture="mlp", hidden_dims=[400, 400], latent_dim=12, activation="relu",
                             likelihood="bernoulli", **prior)
    else:
        config = ModelParams(architecture="conv", hidden_dims=[128], conv_channels=[16, 32], latent_dim=2,
                             activation="tanh", likelihood="continuous_bernoulli")
    torch.manual_seed(0)
    model = VAE(config).eval()
    with torch.no_grad():
        d = config.latent_dim
        model.fc_mu_logvar.weight[: (d + 1) // 2] *= 40  # these units' means now vary: active
        last = [m for m in model.decoder.modules() if isinstance(m, (nn.Linear, nn.ConvTranspose2d))][-1]
        last.weight *= 12
    return model


@pytest.fixture(scope="module")
def pages(tmp_path_factory):
    """{'mlp': (model, page path, fitted samplers), 'conv': (...), 'vamp': (...)}, each page written by explorer.write."""
    x, y = fixture_digits()
    folder = tmp_path_factory.mktemp("explorer")
    out = {}
    for arch in ("mlp", "conv"):
        model = make_model(arch)
        fitted = best = None  # a fitted sampler, the best, for the mlp page's button (the conv page has none)
        if arch == "mlp":
            fitted = samplers.Fitted(samplers.fit(model, x, SamplerParams(gmm_components=3, held_out=100), 0)[0])
            best = MIXTURE_BEST
        path = folder / f"{arch}.html"
        explorer.write(path, model, fitted, x, y, seed=0, threshold=0.01, best=best)
        out[arch] = (model, path, fitted)
    model = make_model("mlp", prior="vamp", vamp_components=5)
    with torch.no_grad():  # five components apart from each other: five different digits, narrow posteriors
        model.pseudo_inputs.copy_(x[:5])
        model.fc_mu_logvar.bias[model.latent_dim:] -= 6
    explorer.write(folder / "vamp.html", model, None, x, y, seed=0, threshold=0.01, best=PRIOR_BEST)
    out["vamp"] = (model, folder / "vamp.html", None)
    return out


def floats(b64: str) -> np.ndarray:
    """The page's base64 float32 arrays, read back."""
    return np.frombuffer(base64.b64decode(b64), "<f4")


@torch.no_grad()
def pytorch_image(model, z) -> np.ndarray:
    z = torch.as_tensor(np.asarray(z, dtype=np.float32))[None]
    return model.mean(model.decode(z))[0].numpy()


# ------------------------------------------------------------------ without a browser


def test_decoder_layers_are_the_decoders_modules_with_their_weights():
    for arch, ops in (("mlp", ["linear", "relu", "linear", "relu", "linear"]),
                      ("conv", ["linear", "tanh", "linear", "tanh", "convt", "tanh", "convt"])):
        model = make_model(arch)
        layers = explorer.decoder_layers(model.decoder, model.latent_dim)
        assert [layer["op"] for layer in layers] == ops
        weighted = [m for m in model.decoder.modules() if isinstance(m, (nn.Linear, nn.ConvTranspose2d))]
        for layer, module in zip([lay for lay in layers if "weight" in lay], weighted):
            weight = np.frombuffer(base64.b64decode(layer["weight"]), "<f4")
            assert np.array_equal(weight, module.weight.detach().numpy().ravel())
    conv = [layer for layer in explorer.decoder_layers(make_model("conv").decoder, 2) if layer["op"] == "convt"]
    assert [(c["c_in"], c["c_out"], c["h"], c["kernel"], c["stride"], c["padding"]) for c in conv] == \
        [(32, 16, 7, 4, 2, 1), (16, 1, 14, 4, 2, 1)]


def test_a_layer_the_page_cannot_run_is_refused():
    with pytest.raises(ValueError, match="cannot run a decoder layer Sigmoid"):
        explorer.decoder_layers(nn.Sequential(nn.Linear(2, 784), nn.Sigmoid()), 2)
    with pytest.raises(ValueError, match="not 784 pixels"):
        explorer.decoder_layers(nn.Sequential(nn.Linear(2, 100)), 2)


def test_units_are_ordered_by_kl_and_marked_by_evaluates_rule():
    model = make_model("mlp")
    x, y = fixture_digits()
    data = explorer.page_data(model, None, x, y, seed=0, threshold=0.01)
    mu, logvar = evaluation.encode_all(model, x)
    kl = objectives.kl_per_dim(mu, logvar).mean(0)
    assert data["units"]["order"] == torch.argsort(kl, descending=True).tolist()
    assert data["units"]["kl"] == kl.tolist()
    active = (mu.var(0) > 0.01).tolist()
    assert data["units"]["active"] == active and 0 < sum(active) < model.latent_dim
    assert data["numbers"]["active_units"] == sum(active)
    assert data["model"]["parameters"] == sum(p.numel() for p in model.parameters())


def test_the_map_is_the_latent_plane_in_2d_and_principal_directions_otherwise():
    x, y = fixture_digits()
    conv, mlp = make_model("conv"), make_model("mlp")
    data = explorer.page_data(conv, None, x, y, seed=0, threshold=0.01)["map"]
    mu = evaluation.encode_all(conv, x)[0].numpy()
    np.testing.assert_allclose(floats(data["points"]).reshape(-1, 2), mu, rtol=1e-6, atol=1e-6)
    assert data["labels"] == ["z1", "z2"]
    data = explorer.page_data(mlp, None, x, y, seed=0, threshold=0.01)["map"]
    axes = floats(data["axes"]).reshape(2, 12).astype(np.float64)
    np.testing.assert_allclose(axes @ axes.T, np.eye(2), atol=1e-6)
    mu = evaluation.encode_all(mlp, x)[0].double().numpy()
    centred = mu - mu.mean(0)  # the first principal direction carries the most variance of any unit vector
    assert np.var(centred @ axes[0], ddof=1) >= np.linalg.eigvalsh(np.cov(centred.T))[-1] * (1 - 1e-5)


def test_the_page_is_one_file_that_names_no_other():
    model = make_model("mlp")
    x, y = fixture_digits(50)
    html = explorer.render(explorer.page_data(model, None, x, y, seed=0, threshold=0.01))
    lowered = html.lower()
    for needle in ("http://", "https://", " src=", " href=", "@import", "url("):
        assert needle not in lowered, needle
    assert lowered.count("</script>") == 1  # the embedded JSON cannot close the script


# ------------------------------------------------------------------ in the browser


@pytest.fixture(scope="module")
def browser(launch_chromium):
    driver = launch_chromium(WIDTH, HEIGHT, **{"goog:loggingPrefs": {"performance": "ALL", "browser": "ALL"}})
    yield driver
    driver.quit()


def open_page(driver, path: Path):
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(path.as_uri())
    WebDriverWait(driver, 60).until(lambda d: d.execute_script(
        "return window.__ready === true && window.__decodeMs !== undefined"))


def page_state(driver) -> tuple[np.ndarray, np.ndarray]:
    """The page's current z and the [0, 1] image it computed for it, as float32."""
    z, image = driver.execute_script("return [Array.from(window.__lastZ), Array.from(window.__lastImage)]")
    return np.asarray(z, np.float32), np.asarray(image, np.float32)


def assert_decodes_like_pytorch(driver, model) -> np.ndarray:
    z, image = page_state(driver)
    ref = pytorch_image(model, z)
    assert image.shape == (784,)
    assert np.abs(image - ref).max() < TOLERANCE, f"max |page - torch| = {np.abs(image - ref).max():.3g} at z={z}"
    return z


def set_slider(driver, element_id: str, value: str):
    driver.execute_script(
        "const el = document.getElementById(arguments[0]); el.value = arguments[1];"
        "el.dispatchEvent(new Event('input', {bubbles: true}));", element_id, value)


@pytest.mark.parametrize("arch", ["mlp", "conv"])
def test_sliders_set_z_and_the_page_decodes_like_pytorch(browser, pages, arch):
    model, path, fitted = pages[arch]
    open_page(browser, path)
    d = model.latent_dim
    assert_decodes_like_pytorch(browser, model)  # z = 0 at start
    rng = np.random.default_rng(1)
    for _ in range(3):
        values = [f"{v:.2f}" for v in rng.integers(-60, 61, size=d) * 0.05]  # on the sliders' 0.05 grid
        for j, v in enumerate(values):
            set_slider(browser, f"unit-{j}", v)
        z = assert_decodes_like_pytorch(browser, model)
        assert np.array_equal(z, np.asarray(values, np.float32))
    assert pytorch_image(model, z).std() > 0.05  # the images compared are not flat


def test_sliders_are_ordered_by_kl_with_inactive_units_marked(browser, pages):
    model, path, fitted = pages["mlp"]
    open_page(browser, path)
    x, y = fixture_digits()
    units = explorer.page_data(model, None, x, y, seed=0, threshold=0.01)["units"]
    rows = browser.execute_script(
        "return Array.from(document.querySelectorAll('#unit-list .unit'), r => [Number(r.querySelector('input')"
        ".dataset.unit), r.classList.contains('inactive'), r.querySelector('label').textContent])")
    assert [j for j, _, _ in rows] == units["order"]
    assert [inactive for _, inactive, _ in rows] == [not units["active"][j] for j in units["order"]]
    assert [label for _, _, label in rows] == [f"z{j + 1}" for j in units["order"]]
    assert browser.find_element("css selector", ".divider").text == "inactive units"


def test_a_slider_moves_with_the_keyboard(browser, pages):
    from selenium.webdriver.common.keys import Keys

    model, path, fitted = pages["mlp"]
    open_page(browser, path)
    top = browser.find_element("css selector", "#unit-list input[type=range]")  # the highest-KL unit
    j = int(top.get_attribute("data-unit"))
    top.send_keys(Keys.ARROW_RIGHT, Keys.ARROW_RIGHT, Keys.ARROW_RIGHT)
    z = assert_decodes_like_pytorch(browser, model)
    expected = np.zeros(model.latent_dim, np.float32)
    expected[j] = 0.15
    assert np.array_equal(z, expected)


def test_random_and_reset_buttons(browser, pages):
    model, path, fitted = pages["mlp"]
    open_page(browser, path)
    browser.find_element("id", "random").click()
    z = assert_decodes_like_pytorch(browser, model)
    assert np.all(z != 0) and np.abs(z).max() < 10
    shown = browser.execute_script("return Array.from(document.querySelectorAll('#unit-list output'), o => o.value)")
    order = json.loads(browser.execute_script("return JSON.stringify(DATA.units.order)"))
    assert [float(s) for s in shown] == pytest.approx([round(float(z[j]), 2) for j in order], abs=0.006)
    browser.find_element("id", "reset").click()
    z = assert_decodes_like_pytorch(browser, model)
    assert np.array_equal(z, np.zeros(model.latent_dim, np.float32))


def test_the_best_sampler_button_draws_from_the_models_mixture(browser, pages):
    model, path, fitted = pages["mlp"]
    s = fitted.state["samplers"]["gmm"]
    open_page(browser, path)
    button = browser.find_element("id", "fitted")
    assert button.is_displayed() and button.text == "Draw from the best sampler (gmm, 3 components; FID 90.0)"
    seen = set()
    for _ in range(12):
        button.click()
        z = assert_decodes_like_pytorch(browser, model)
        k, eps = browser.execute_script("return [window.__lastDraw.k, window.__lastDraw.eps]")
        want = (s["means"][k] + s["scale_tril"][k] @ torch.tensor(eps, dtype=torch.float64)).float().numpy()
        np.testing.assert_allclose(z, want, rtol=1e-6, atol=1e-6)  # float64 sums in another order, then float32
        assert 0 <= k < 3
        seen.add(k)
        assert "the best sampler, the fitted 'gmm'" in browser.find_element("id", "source").text
    assert len(seen) > 1  # components are picked by weight, not always the first
    # the page's z = means[k] + L[k] eps is torch's for the same component and normals (the gmm sampler's draw)
    g = torch.Generator().manual_seed(4)
    k = torch.multinomial(s["weights"], 5, replacement=True, generator=g)
    eps = torch.randn(5, model.latent_dim, generator=g, dtype=torch.float64)
    torch_z = samplers.get(model, fitted, "gmm").draw(5, torch.Generator().manual_seed(4)).numpy()
    page_z = [browser.execute_script("return Array.from(window.mixtureZ(arguments[0], arguments[1]))", int(k[i]), eps[i].tolist())
              for i in range(5)]
    np.testing.assert_allclose(np.asarray(page_z, np.float32), torch_z, rtol=1e-6, atol=1e-6)


def test_the_page_draws_the_best_sampler_at_its_recorded_temperature(browser, pages, tmp_path):
    model, _, fitted = pages["mlp"]
    cold = choice.Choice("gmm", {"prior": 1.0, "gmm": 0.5}, {"prior": 300.0, "gmm": 80.0})
    explorer.write(tmp_path / "cold.html", model, fitted, *fixture_digits(), seed=0, threshold=0.01, best=cold)
    open_page(browser, tmp_path / "cold.html")
    assert browser.find_element("id", "fitted").text == "Draw from the best sampler (gmm, 3 components, T = 0.5; FID 80.0)"
    g = torch.Generator().manual_seed(6)
    k = torch.multinomial(fitted.state["samplers"]["gmm"]["weights"], 4, replacement=True, generator=g)
    eps = torch.randn(4, model.latent_dim, generator=g, dtype=torch.float64)
    torch_z = samplers.get(model, fitted, "gmm").draw(4, torch.Generator().manual_seed(6), temperature=0.5).numpy()
    page_z = [browser.execute_script("return Array.from(window.mixtureZ(arguments[0], arguments[1]))", int(k[i]), eps[i].tolist())
              for i in range(4)]
    np.testing.assert_allclose(np.asarray(page_z, np.float32), torch_z, rtol=1e-6, atol=1e-6)


def test_a_page_whose_best_sampler_is_the_prior_draws_from_the_prior(browser, pages):
    model, path, _ = pages["vamp"]
    open_page(browser, path)
    button = browser.find_element("id", "fitted")
    assert button.is_displayed() and button.text == "Draw from the best sampler (the prior; FID 75.0)"
    button.click()
    assert_decodes_like_pytorch(browser, model)
    assert browser.find_element("id", "source").text.startswith("random z ~ VampPrior (K = 5), component ")
    assert browser.find_element("id", "source").text.endswith(": the best sampler")


def test_without_a_fitted_sampler_the_button_is_hidden(browser, pages):
    open_page(browser, pages["conv"][1])
    assert not browser.find_element("id", "fitted").is_displayed()


def test_random_draws_from_the_vampprior_components(browser, pages):
    model, path, fitted = pages["vamp"]
    with torch.no_grad():
        mu, logvar = model.prior_components()
    std = torch.exp(0.5 * logvar)
    data = explorer.page_data(model, None, *fixture_digits(), seed=0, threshold=0.01)["prior"]
    assert data["name"] == "vamp" and data["components"] == 5
    np.testing.assert_array_equal(floats(data["mu"]), mu.numpy().ravel())
    open_page(browser, path)
    assert browser.find_element("id", "random").text == "Random z ~ VampPrior (K = 5)"
    for _ in range(5):
        browser.find_element("id", "random").click()
        z = torch.from_numpy(assert_decodes_like_pytorch(browser, model))
        k = int(browser.find_element("id", "source").text.rsplit(" ", 1)[1]) - 1  # "..., component k"
        assert ((z - mu[k]).abs() < 6 * std[k]).all()  # a draw of that component, N(mu_k, std_k^2)
        assert evaluation.most_likely_components(model, z[None]).item() == k  # and of no other
    assert explorer.page_data(pages["mlp"][0], None, *fixture_digits(), seed=0, threshold=0.01)["prior"] == \
        {"name": "standard"}


def _map_offset(browser, dx: float, dy: float):
    from selenium.webdriver.common.action_chains import ActionChains

    return ActionChains(browser).move_to_element_with_offset(browser.find_element("id", "map"), dx, dy)


@pytest.mark.parametrize("arch", ["conv", "mlp"])
def test_the_map_decodes_the_point_hovered_or_clicked(browser, pages, arch):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.support.ui import WebDriverWait

    model, path, fitted = pages[arch]
    open_page(browser, path)
    before = browser.execute_script("return window.__decodes")
    _map_offset(browser, -60, 40).perform()  # hover: decoded without clicking
    WebDriverWait(browser, 10).until(lambda d: d.execute_script("return window.__decodes") > before)
    hovered = assert_decodes_like_pytorch(browser, model)
    _map_offset(browser, 80, -50).click().perform()
    right_up = assert_decodes_like_pytorch(browser, model)
    _map_offset(browser, -80, 50).click().perform()
    left_down = assert_decodes_like_pytorch(browser, model)
    data = json.loads(browser.execute_script("return JSON.stringify(DATA.map)"))
    origin, axes = floats(data["origin"]).astype(np.float64), floats(data["axes"]).astype(np.float64).reshape(2, -1)
    coords = [(z - origin) @ axes.T for z in (hovered, right_up, left_down)]
    for z, ab in zip((hovered, right_up, left_down), coords):  # every point lies on the map's plane
        np.testing.assert_allclose(origin + ab @ axes, z, atol=1e-5)
    assert coords[1][0] > coords[0][0] and coords[1][0] > coords[2][0]  # right is +a
    assert coords[1][1] > coords[2][1]  # up is +b
    _map_offset(browser, 0, 0).perform()  # hover elsewhere, then leave the map: back to the clicked z
    ActionChains(browser).move_to_element(browser.find_element("id", "reset")).perform()
    assert np.array_equal(page_state(browser)[0], left_down)


def test_interpolation_between_two_gallery_digits(browser, pages):
    model, path, fitted = pages["mlp"]
    open_page(browser, path)
    x, y = fixture_digits()
    index = json.loads(browser.execute_script("return JSON.stringify(DATA.gallery.index)"))
    browser.find_element("id", "digit-2").click()  # becomes A
    browser.find_element("id", "digit-7").click()  # becomes B
    with torch.no_grad():
        a, b = (model.encode(x[[index[k]]])[0][0].double().numpy() for k in (2, 7))
    set_slider(browser, "t", "0.3")
    z = assert_decodes_like_pytorch(browser, model)
    np.testing.assert_allclose(z, 0.7 * a + 0.3 * b, rtol=1e-5, atol=1e-6)
    browser.find_element("id", "mode-slerp").click()
    z = assert_decodes_like_pytorch(browser, model)
    omega = np.arccos(a @ b / np.linalg.norm(a) / np.linalg.norm(b))
    slerp = (np.sin(0.7 * omega) * a + np.sin(0.3 * omega) * b) / np.sin(omega)
    np.testing.assert_allclose(z, slerp, rtol=1e-5, atol=1e-6)
    assert np.abs(slerp - (0.7 * a + 0.3 * b)).max() > 1e-3  # the two paths differ
    set_slider(browser, "t", "1")
    np.testing.assert_allclose(assert_decodes_like_pytorch(browser, model), b, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("arch", ["mlp", "conv"])
def test_no_request_leaves_the_page_and_it_fits_1280x800(browser, pages, arch, tmp_path, record_property):
    model, path, fitted = pages[arch]
    browser.get_log("performance"), browser.get_log("browser")  # drop what earlier tests left
    open_page(browser, path)
    set_slider(browser, browser.find_element("css selector", "#unit-list input[type=range]").get_attribute("id"), "1.5")
    browser.find_element("id", "digit-4").click()
    browser.find_element("id", "digit-13").click()
    browser.find_element("id", "mode-slerp").click()
    set_slider(browser, "t", "0.4")
    _map_offset(browser, 30, -30).click().perform()
    assert_decodes_like_pytorch(browser, model)
    shot = tmp_path / f"explorer-{arch}.png"
    browser.save_screenshot(str(shot))
    if os.environ.get("MNIST_VAE_SCREENSHOT_DIR"):
        folder = Path(os.environ["MNIST_VAE_SCREENSHOT_DIR"])
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, folder / shot.name)
    assert shot.stat().st_size > 10_000

    events = [json.loads(entry["message"])["message"] for entry in browser.get_log("performance")]
    requests = [e["params"]["request"]["url"] for e in events if e["method"] == "Network.requestWillBeSent"]
    assert requests == [path.as_uri()], requests  # the page itself, nothing else
    assert not [e for e in events if e["method"] in ("Network.loadingFailed", "Network.webSocketCreated")]
    errors = [e["message"] for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors  # no script error, no request refused by the page's policy

    viewport = browser.execute_script("return [window.innerWidth, window.innerHeight]")
    sizes = browser.execute_script("return [document.documentElement.scrollWidth, document.documentElement.scrollHeight]")
    assert sizes[0] <= viewport[0] and sizes[1] <= viewport[1], (sizes, viewport)  # nothing to scroll
    for element_id in ("image", "map", "reset", "random", "t", "gallery", "numbers", f"unit-{model.latent_dim - 1}"):
        box = browser.execute_script("return document.getElementById(arguments[0]).getBoundingClientRect().toJSON()",
                                     element_id)
        assert box["bottom"] <= viewport[1] and box["right"] <= viewport[0] and box["height"] > 0, element_id

    ms = browser.execute_script("return window.__decodeMs")
    runs = browser.execute_script("return window.__decodeRuns")
    assert 0 < ms < 1000 and runs >= 50
    assert browser.find_element("id", "decode-ms").text.endswith("ms")
    record_property(f"decode_ms_{arch}", ms)
    print(f"{arch}: one decode takes {ms:.2f} ms in headless Chromium (mean of {runs})")


# ------------------------------------------------------------------ the render stage


def _render_workspace(root: Path, explorer_on: bool) -> dict:
    """A folder laid out as the render stage reads it (small MLP with a fitted 3-component sampler and evaluate's
    choice of the best sampler, 100 fixture test digits, the training's frames, every figure off), and the
    environment to run the stage in."""
    x, y = fixture_digits(100)
    save_npz(root / "data/processed/test.npz", {"x": x.numpy(), "y": y})
    torch.manual_seed(0)
    model = VAE(ModelParams(hidden_dims=[32], latent_dim=3))
    save_checkpoint(root / "models/vae.pt", model)
    state, _ = samplers.fit(model, x, SamplerParams(gmm_components=3, held_out=20), 0)  # as the sampler stage writes it
    samplers.save(root / "models/sampler.pt", state, sha256_file(root / "models/vae.pt"))
    choice.record(root / "models/best_sampler.json", {"prior": 300.0, "gmm": 90.0}, {"prior": 1.0, "gmm": 1.0},
                  root / "models/vae.pt", root / "models/sampler.pt")  # as evaluate writes it
    frame = np.zeros((1, 4, 784), np.uint8)  # the training's frames, as train writes them (none drawn: progress_every 0)
    save_npz(root / "reports/frames.npz", {"epochs": np.zeros(1, np.int64), "samples": frame, "reconstructions": frame,
                                           "originals": frame[0]})
    params = Params().model_dump()
    params["render"] = {"samples_grid": 0, "interpolation_rows": 0, "reconstructions": 0, "latent_points": 0,
                        "manifold_grid": 0, "histograms": False, "curves": False, "class_sheet": 0,
                        "class_histogram": False, "explorer": explorer_on, "progress_every": 0}
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    return env


@pytest.mark.slow
def test_render_writes_the_explorer_when_on_and_only_a_notice_when_off(tmp_path):
    env = _render_workspace(tmp_path, explorer_on=True)
    page = tmp_path / "reports/explorer.html"
    run = lambda: subprocess.run([sys.executable, str(REPO / "stages/render.py")], cwd=tmp_path, env=env,  # noqa: E731
                                 capture_output=True, text=True, timeout=300)
    done = run()
    assert done.returncode == 0, done.stderr
    html = page.read_text()
    assert page.stat().st_size > 100_000 and '"op":"linear"' in html
    assert '"sampler":{"name":"gmm","temperature":1.0,"fid":90.0,' in html  # evaluate's choice draws the button
    params = yaml.safe_load((tmp_path / "params.yaml").read_text())
    params["render"]["explorer"] = False
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    done = run()
    assert done.returncode == 0, done.stderr
    off = page.read_text()
    assert "render.explorer: false" in off and '"op"' not in off and page.stat().st_size < 2_000

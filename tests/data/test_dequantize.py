"""data/dequantize.py: each mode's training input (bit for bit as the reference notebook for `notebook`), its
mean over the noise (what a trained model is given for a real image), and the way back to pixel / 255."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mnist_vae.data.dequantize import MODES, dequantize, dequantize_splits, expected_input, to_pixel_scale
from mnist_vae.errors import UserError


@pytest.fixture
def pixels(small_mnist):
    return small_mnist["x_train"]


def reference_notebook(px: np.ndarray, seed: int) -> np.ndarray:
    """The reference notebook's own lines, with the global RNG (restored afterwards)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        X = (np.float32(px) + torch.rand(px.shape).numpy()) / 255.
        X = X.clip(0, 1)
        return X.reshape(-1, 784)


def test_notebook_mode_is_bit_identical_to_the_notebook(pixels):
    got = dequantize(pixels, "notebook", torch.Generator().manual_seed(0))
    want = reference_notebook(pixels, 0)
    assert got.dtype == np.float32 and want.dtype == np.float32
    assert got.shape == (len(pixels), 784)
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))


def test_notebook_mode_depends_on_the_seed(pixels):
    a = dequantize(pixels, "notebook", torch.Generator().manual_seed(0))
    b = dequantize(pixels, "notebook", torch.Generator().manual_seed(1))
    assert not np.array_equal(a, b)


def test_dequantize_splits_seeds(small_mnist):
    out = dequantize_splits(small_mnist, "notebook", seed=3)
    assert set(out) == {"train", "test"}
    for split, seed in (("train", 3), ("test", 4)):
        x = out[split]["x"]
        assert x.shape == (len(small_mnist[f"x_{split}"]), 784) and x.dtype == np.float32
        assert x.flags.c_contiguous
        assert x.min() >= 0 and x.max() <= 1
        np.testing.assert_array_equal(x.view(np.uint32), reference_notebook(small_mnist[f"x_{split}"], seed).view(np.uint32))
        np.testing.assert_array_equal(out[split]["y"], small_mnist[f"y_{split}"])
        assert set(out[split]) == {"x", "y"}
    # test does not reuse the train stream
    assert not np.array_equal(out["test"]["x"], reference_notebook(small_mnist["x_test"], 3))


def test_notebook_mode_clips_at_one():
    px = np.full((50, 28, 28), 255, np.uint8)
    x = dequantize(px, "notebook", torch.Generator().manual_seed(0))
    assert x.max() == 1.0 and x.min() >= 1.0  # (255 + u) / 255 >= 1, clipped to 1


def test_uniform_mode(pixels):
    x = dequantize(pixels, "uniform", torch.Generator().manual_seed(5))
    u = torch.rand(pixels.shape, generator=torch.Generator().manual_seed(5)).numpy()
    want = ((np.float32(pixels) + u) / np.float32(256)).reshape(len(pixels), 784)
    np.testing.assert_array_equal(x.view(np.uint32), want.view(np.uint32))
    assert x.dtype == np.float32 and x.shape == (len(pixels), 784)
    assert x.min() >= 0 and x.max() < 1
    flat = pixels.reshape(len(pixels), -1).astype(np.float64)
    assert np.all(x * 256.0 >= flat) and np.all(x * 256.0 <= flat + 1)
    # pixels 0 and 255 land in [0, 1/256) and [255/256, 1)
    assert x[:, 0].max() < 1 / 256 and x[:, 14 * 28 + 14].min() >= 255 / 256


def test_uniform_mode_stays_below_one():
    px = np.full((2000, 28, 28), 255, np.uint8)  # 1.6 M draws; about 12 hit the rounding edge
    x = dequantize(px, "uniform", torch.Generator().manual_seed(0))
    assert x.max() < 1.0


def test_none_mode_is_pixel_over_255_exactly():
    values = np.arange(256, dtype=np.uint8)
    px = np.resize(values, (3, 28, 28))
    gen = torch.Generator().manual_seed(0)
    x = dequantize(px, "none", gen)
    want = (px.reshape(3, 784).astype(np.float64) / 255.0).astype(np.float32)  # correctly rounded
    np.testing.assert_array_equal(x.view(np.uint32), want.view(np.uint32))
    assert x.dtype == np.float32 and x.min() == 0.0 and x.max() == 1.0
    # and it draws nothing from the generator
    assert torch.equal(torch.rand(4, generator=gen), torch.rand(4, generator=torch.Generator().manual_seed(0)))


def test_binarize_mode(small_mnist):
    px = np.concatenate([small_mnist["x_train"]] * 4)  # 1200 images
    x = dequantize(px, "binarize", torch.Generator().manual_seed(0))
    assert x.dtype == np.float32 and x.shape == (len(px), 784)
    assert set(np.unique(x).tolist()) == {0.0, 1.0}
    flat = px.reshape(len(px), -1)
    assert np.all(x[flat == 0] == 0) and np.all(x[flat == 255] == 1)
    expected = flat.mean() / 255
    n = flat.size
    assert abs(x.mean() - expected) < 5 * np.sqrt(expected * (1 - expected) / n)
    again = dequantize(px, "binarize", torch.Generator().manual_seed(0))
    np.testing.assert_array_equal(x, again)


def test_binarize_splits_carry_intensities(small_mnist):
    out = dequantize_splits(small_mnist, "binarize", seed=0)
    for split in ("train", "test"):
        arrays = out[split]
        assert set(arrays) == {"x", "y", "p"}
        px = small_mnist[f"x_{split}"]
        np.testing.assert_array_equal(arrays["p"], dequantize(px, "none", None))
        assert arrays["p"].dtype == np.float32 and arrays["p"].shape == (len(px), 784)
        assert set(np.unique(arrays["x"]).tolist()) <= {0.0, 1.0}
    first = dequantize(small_mnist["x_train"], "binarize", torch.Generator().manual_seed(0))
    np.testing.assert_array_equal(out["train"]["x"], first)


@pytest.mark.parametrize("mode", ["uniform", "none"])
def test_other_modes_through_splits(small_mnist, mode):
    out = dequantize_splits(small_mnist, mode, seed=0)
    for split in ("train", "test"):
        x = out[split]["x"]
        assert x.shape == (len(small_mnist[f"x_{split}"]), 784) and x.dtype == np.float32
        assert 0 <= x.min() and x.max() <= 1
        assert set(out[split]) == {"x", "y"}


def test_an_unknown_mode_is_one_line_naming_the_modes():
    for call in (lambda: dequantize(np.zeros((1, 28, 28), np.uint8), "gaussian", torch.Generator()),
                 lambda: expected_input(np.zeros(3), "gaussian"), lambda: to_pixel_scale(torch.zeros(3), "gaussian")):
        with pytest.raises(UserError, match="unknown dequantize mode 'gaussian'; use one of notebook, uniform, none, binarize"):
            call()


def test_to_pixel_scale_inverts_each_dequantizations_mean():
    pixels = torch.arange(256, dtype=torch.float64)
    target = pixels / 255
    # the notebook's data: mean (pixel + 0.5) / 255, except pixel 255, clipped to exactly 1
    notebook_mean = ((pixels + 0.5) / 255).clamp(max=1)
    mapped = to_pixel_scale(notebook_mean, "notebook")
    assert mapped[0] == pytest.approx(0, abs=1e-12) and mapped[-1] == pytest.approx(1, abs=1e-12)
    assert torch.allclose(mapped, target, atol=0.5 / 255)  # within half a grey level in between
    assert torch.allclose(to_pixel_scale((pixels + 0.5) / 256, "uniform"), target, atol=1e-12)
    assert torch.equal(to_pixel_scale(target, "none"), target)
    assert torch.equal(to_pixel_scale(target, "binarize"), target)
    assert to_pixel_scale(torch.tensor([0.0, 1.5]), "uniform").tolist() == [0.0, 1.0]  # clipped


@pytest.mark.parametrize("mode", MODES)
def test_the_expected_input_is_the_mean_of_the_training_input_over_its_noise(mode):
    pixels = np.arange(256, dtype=np.uint8).reshape(1, 16, 16).repeat(4000, axis=0)
    x = dequantize(pixels, mode, torch.Generator().manual_seed(0)).astype(np.float64).mean(0)
    want = expected_input(np.arange(256, dtype=np.float64), mode)
    assert np.abs(x - want).max() < (0.02 if mode == "binarize" else 3e-4)  # sampling error of 4000 draws


@pytest.mark.parametrize("mode", MODES)
def test_to_pixel_scale_undoes_the_expected_input(mode):
    pixels = np.arange(256, dtype=np.float64)
    back = to_pixel_scale(torch.from_numpy(expected_input(pixels, mode)), mode).numpy()
    assert np.abs(back - pixels / 255).max() <= (0.5 / 255 if mode == "notebook" else 1e-12)


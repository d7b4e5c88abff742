"""Image files -> MNIST-style 28x28 digits."""

import numpy as np
import PIL.Image
import pytest

from helpers.digits import FIXTURE_DIGITS
from mnist_vae.api.images import read_digit
from mnist_vae.errors import UserError


@pytest.fixture(scope="module")
def digit():
    with np.load(FIXTURE_DIGITS) as f:
        return f["x_test"][0]  # a 7


def correlation(a, b) -> float:
    return float(np.corrcoef(a.astype(float).ravel(), b.astype(float).ravel())[0, 1])


def test_a_28x28_grey_png_is_read_unchanged(tmp_path, digit):
    PIL.Image.fromarray(digit, mode="L").save(tmp_path / "d.png")
    pixels, how = read_digit(tmp_path / "d.png")
    assert pixels.dtype == np.uint8 and np.array_equal(pixels, digit)
    assert "kept as is" in how and "inverted" not in how


def test_a_big_colour_photo_of_dark_ink_on_paper_is_inverted_and_normalised(tmp_path, digit):
    big = np.asarray(PIL.Image.fromarray(digit).resize((280, 280), PIL.Image.Resampling.BICUBIC))
    paper = np.zeros((400, 300, 3), np.uint8) + np.array([250, 245, 230], np.uint8)  # cream paper
    ink = big[..., None].astype(float) / 255
    canvas = paper.copy()
    canvas[60:340, 10:290] = (paper[:280, :280] * (1 - ink) + np.array([20, 30, 120]) * ink).astype(np.uint8)  # blue ink
    PIL.Image.fromarray(canvas).save(tmp_path / "photo.jpg", quality=92)
    pixels, how = read_digit(tmp_path / "photo.jpg")
    assert pixels.shape == (28, 28) and "inverted" in how and "300x400 RGB" in how
    assert pixels[0].max() < 30 and pixels.max() == 255  # black border, full-contrast strokes
    ys, xs = np.indices(pixels.shape)
    w = pixels.astype(float)
    assert abs((ys * w).sum() / w.sum() - 14) < 0.5 and abs((xs * w).sum() / w.sum() - 14) < 0.5  # centred by mass
    assert correlation(pixels, digit) > 0.95  # the same 7, MNIST-normalised again


def test_transparent_background_is_flattened_onto_white(tmp_path, digit):
    rgba = np.zeros((56, 56, 4), np.uint8)
    rgba[..., 3] = np.asarray(PIL.Image.fromarray(digit).resize((56, 56)))  # black ink, alpha = ink
    PIL.Image.fromarray(rgba, mode="RGBA").save(tmp_path / "ink.png")
    pixels, how = read_digit(tmp_path / "ink.png")
    assert "transparency on white" in how and "inverted" in how
    assert correlation(pixels, digit) > 0.8


def test_not_an_image_and_missing_files_are_user_errors(tmp_path):
    (tmp_path / "notes.png").write_text("hello")
    with pytest.raises(UserError, match="not an image"):
        read_digit(tmp_path / "notes.png")
    with pytest.raises(UserError, match="does not exist"):
        read_digit(tmp_path / "none.png")

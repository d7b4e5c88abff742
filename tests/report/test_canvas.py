"""The canvas (report/canvas.py): digit grids tiled and written as PNG files."""

import numpy as np
import PIL.Image
import pytest

from mnist_vae.report.canvas import figure, labelled_grid, save, save_grid, tile

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_save_grid_tiles_digits_and_leaves_empty_cells_white(tmp_path):
    images = np.zeros((2, 3, 784), np.float32)
    images[1, 2] = np.nan
    save_grid(tmp_path / "g.png", images)
    out = np.asarray(PIL.Image.open(tmp_path / "g.png"))
    assert out.shape == (3 * (2 * 28 + 2), 3 * (3 * 28 + 2 * 2))  # scaled 3x, 2-pixel white lines
    assert out[:84, :84].max() == 0 and out[-84:, -84:].min() == 255
    assert [p.name for p in tmp_path.iterdir()] == ["g.png"]  # no temporary file left


def test_tile_shape_pad_and_blanks():
    images = np.zeros((2, 3, 784), dtype=np.float32)
    images[1, 2] = np.nan
    canvas = tile(images)
    assert canvas.shape == (2 * 28 + 2, 3 * 28 + 2 * 2)
    assert (canvas[28:30] == 1).all() and (canvas[:, 28:30] == 1).all()  # white pad
    assert np.isnan(canvas[30:, 60:]).all() and (canvas[:28, :28] == 0).all()
    assert tile(images.reshape(2, 3, 28, 28), pad=0).shape == (56, 84)


def test_save_writes_a_small_png_grayscale_without_colour(tmp_path):
    fig = labelled_grid(tile(np.linspace(0, 1, 2 * 3 * 784, dtype=np.float32).reshape(2, 3, 784)), ["a", "b"])
    path = tmp_path / "made" / "grid.png"
    save(fig, path)
    raw = path.read_bytes()
    assert raw[:8] == PNG_MAGIC and len(raw) < 300_000
    with PIL.Image.open(path) as image:  # about 100 dpi; a digit grid has no colour, so it is grayscale
        assert image.size == tuple(round(v * 100) for v in fig.get_size_inches())
        assert image.mode == "L"
    colour = figure(3, 2)
    colour.add_subplot().bar([0, 1], [1, 2], color="tab:blue")
    save(colour, tmp_path / "bars.png")
    with PIL.Image.open(tmp_path / "bars.png") as image:
        assert image.mode == "RGB"


def test_labelled_grid_names_each_row_and_shows_the_canvas():
    canvas = tile(np.linspace(0, 1, 3 * 4 * 784, dtype=np.float32).reshape(3, 4, 784))
    fig = labelled_grid(canvas, ["z1", "z0", "z3"], "a title")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["z1", "z0", "z3"]
    assert ax.get_yticks().tolist() == [13.5, 43.5, 73.5]  # the centres of the three rows of digits
    assert np.array_equal(ax.images[0].get_array(), canvas) and ax.get_title() == "a title"
    with pytest.raises(ValueError, match="2 labels for 3 rows"):
        labelled_grid(canvas, ["a", "b"])

"""report/progress.py: which frames are drawn, their files' names, and what each shows."""

import numpy as np
import PIL.Image

from mnist_vae.report import progress


def frames(n: int = 31) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"epochs": np.arange(n), "samples": rng.integers(0, 256, (n, 64, 784), dtype=np.uint8),
            "reconstructions": rng.integers(0, 256, (n, 10, 784), dtype=np.uint8),
            "originals": rng.integers(0, 256, (10, 784), dtype=np.uint8)}


def test_every_kth_frame_from_the_start_and_the_last_are_drawn():
    epochs = np.arange(31)  # before the first epoch, then 30
    assert progress.selected(epochs, 3) == list(range(0, 31, 3))  # 11 frames: 0, 3, ..., 30
    assert progress.selected(epochs, 7) == [0, 7, 14, 21, 28, 30]  # the last, though not a multiple
    assert progress.selected(epochs, 1) == list(range(31))
    assert progress.selected(epochs, 0) == []


def test_the_files_are_named_for_their_kind_and_epoch_and_show_the_frame(tmp_path):
    f = frames()
    written = progress.write(tmp_path, f, 10)
    assert sorted(p.name for p in written) == sorted(
        progress.file_name(kind, e) for kind in progress.KINDS for e in (0, 10, 20, 30))
    assert progress.parse("samples_epoch_010.png") == ("samples", 10) and progress.parse("samples.png") is None
    with PIL.Image.open(tmp_path / "samples_epoch_010.png") as image:  # an 8 x 8 grid, 3x, 2-pixel white lines
        pixels = np.asarray(image)
    assert pixels.shape == (3 * (8 * 28 + 7 * 2), 3 * (8 * 28 + 7 * 2))
    first = pixels[:28 * 3:3, :28 * 3:3]
    assert np.array_equal(first, f["samples"][10, 0].reshape(28, 28))
    with PIL.Image.open(tmp_path / "reconstructions_epoch_030.png") as image:  # originals above reconstructions
        pixels = np.asarray(image)
    assert np.array_equal(pixels[:84:3, :84:3], f["originals"][0].reshape(28, 28))
    assert np.array_equal(pixels[90:174:3, :84:3], f["reconstructions"][30, 0].reshape(28, 28))
    assert progress.write(tmp_path / "none", f, 0) == []

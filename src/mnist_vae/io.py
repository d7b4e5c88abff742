"""Atomic, byte-reproducible file writing shared by all stages."""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Iterator, Mapping, Union

import numpy as np

from mnist_vae.errors import UserError

PathLike = Union[str, os.PathLike]


@contextlib.contextmanager
def atomic_path(path: PathLike, durable: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it over `path` only if the block succeeds.

    durable: the temporary file's bytes reach the disk (fsync) before the rename, and the rename before
    this returns (fsync of the folder), so after a crash or power loss `path` holds either its previous
    bytes or all of the new ones."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual permissions
    try:
        yield tmp
        if durable:
            _fsync(tmp)
        os.replace(tmp, path)
        if durable:
            _fsync(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def save_npz(path: PathLike, arrays: Mapping[str, np.ndarray]) -> None:
    """Write an uncompressed .npz that np.load reads, with fixed timestamps so equal arrays give equal bytes."""
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name, array in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(array), allow_pickle=False)
            zf.writestr(info, buf.getvalue())


def load_npz(path: PathLike, keys: tuple[str, ...], stage: str) -> dict[str, np.ndarray]:
    """Load named arrays, turning a missing or unreadable file into a one-line UserError."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} is missing; run `dvc repro {stage}` to make it")
    try:
        with np.load(path, allow_pickle=False) as f:
            missing = [k for k in keys if k not in f.files]
            if missing:
                raise UserError(f"{path} lacks {', '.join(missing)}; rerun `dvc repro -f {stage}`")
            return {k: f[k] for k in keys}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise UserError(f"{path} is corrupt or truncated ({exc}); rerun `dvc repro -f {stage}`") from None


def load_history(path: PathLike) -> list[dict[str, float]]:
    """The per-epoch rows of metrics/history.csv as numbers; a one-line UserError if missing or unreadable."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} is missing; run `dvc repro train` to make it")
    try:
        with open(path, newline="") as f:
            return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]
    except (OSError, ValueError, TypeError) as exc:
        raise UserError(f"{path} is unreadable ({exc}); rerun `dvc repro -f train`") from None


def save_json(path: PathLike, obj) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")


def sha256_file(path: PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()

"""Files in and out, for every layer: atomic and byte-reproducible writes, and checked reads that turn a
missing, truncated or foreign file into one FileProblem line (errors.py) naming the path.

Tensors are saved with torch.save through a file object (so equal objects give equal bytes) and loaded
with torch.load(weights_only=True): tensors, numbers, strings and containers of them, never a pickled
object."""

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
from typing import Any, Callable, Iterator, Mapping, Optional, Union

import numpy as np

from mnist_vae.errors import FileProblem, one_line

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


def load_npz(path: PathLike, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Load named arrays; a missing, unreadable or incomplete file is a FileProblem."""
    path = Path(path)
    if not path.is_file():
        raise FileProblem(path, "missing")
    try:
        with np.load(path, allow_pickle=False) as f:
            missing = [k for k in keys if k not in f.files]
            if missing:
                raise FileProblem(path, "unreadable", f"{path} lacks {', '.join(missing)}")
            return {k: f[k] for k in keys}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise FileProblem(path, "unreadable", f"{path} is corrupt or truncated ({one_line(exc)})") from None


def load_history(path: PathLike) -> list[dict[str, float]]:
    """The per-epoch rows of a history CSV (metrics/history.csv) as numbers; a FileProblem if missing or unreadable."""
    path = Path(path)
    if not path.is_file():
        raise FileProblem(path, "missing")
    try:
        with open(path, newline="") as f:
            return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]
    except (OSError, ValueError, TypeError) as exc:
        raise FileProblem(path, "unreadable", f"{path} is unreadable ({one_line(exc)})") from None


def save_history(path: PathLike, rows: list[dict[str, float]]) -> None:
    """The per-epoch rows as a CSV, columns in the first row's order."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def save_json(path: PathLike, obj) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")


def load_json(path: PathLike) -> Any:
    """A JSON file's content; a FileProblem if missing or not JSON."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise FileProblem(path, "missing") from None
    except (OSError, ValueError) as exc:
        raise FileProblem(path, "unreadable", f"{path} is unreadable ({one_line(exc)})") from None


def save_tensors(path: PathLike, obj: Mapping[str, Any], durable: bool = False) -> None:
    """torch.save `obj` (tensors, numbers, strings) atomically, through a file object so that the zip's inner
    folder is not named after the temporary file and equal objects give equal bytes; `durable` as atomic_path."""
    import torch

    with atomic_path(path, durable) as tmp, open(tmp, "wb") as f:
        torch.save(dict(obj), f)


def load_tensors(path: PathLike, what: str, check: Optional[Callable[[dict], None]] = None,
                 crc: bool = False, device: Any = "cpu") -> dict:
    """What save_tensors wrote, loaded with torch.load(weights_only=True) onto `device`. A missing file, one
    that is not a torch.save archive (or, with `crc`, fails a record's CRC-32, which torch.load does not check),
    or whose content `check` refuses (by raising) is a FileProblem: '<path> is not a readable <what> (...)'."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise FileProblem(path, "missing")
    try:
        if not zipfile.is_zipfile(path):
            raise ValueError("not a torch.save zip archive")
        if crc:
            with zipfile.ZipFile(path) as archive:
                damaged = archive.testzip()
            if damaged:
                raise ValueError(f"{damaged} fails its CRC-32 check")
        obj = torch.load(path, map_location=device, weights_only=True)
        if not isinstance(obj, dict):
            raise ValueError(f"holds a {type(obj).__name__}, not a mapping")
        if check is not None:
            check(obj)
    except FileProblem:
        raise
    except Exception as exc:  # a truncated or garbled file fails in many ways; all mean the same here
        raise FileProblem(path, "unreadable", f"{path} is not a readable {what} ({exc.__class__.__name__}: "
                                              f"{one_line(exc, 200)})") from None
    return obj


def sha256_file(path: PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()

"""io: reproducible .npz files, atomic writes, one-line errors for missing or broken inputs."""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
import zipfile
from fractions import Fraction

import numpy as np
import pytest
import torch

from mnist_vae.errors import FileProblem, UserError
from mnist_vae.errors import one_line as exception_line
from mnist_vae.files import (
    atomic_path,
    load_history,
    load_json,
    load_npz,
    load_tensors,
    save_history,
    save_json,
    save_npz,
    save_tensors,
    sha256_file,
)


def one_line(message: str) -> bool:
    return bool(message) and "\n" not in message and "\r" not in message


@pytest.fixture
def arrays():
    rng = np.random.default_rng(0)
    return {
        "x": rng.random((50, 784), dtype=np.float32),
        "y": rng.integers(0, 10, 50, dtype=np.uint8),
        "p": np.asfortranarray(rng.random((6, 5))),  # not C-ordered
        "s": np.arange(20, dtype=np.int64)[::3],  # a strided view
    }


# --------------------------------------------------------------------------- save_npz


def test_save_npz_round_trips_through_np_load(tmp_path, arrays):
    path = tmp_path / "sub" / "a.npz"  # the parent is created
    save_npz(path, arrays)
    with np.load(path, allow_pickle=False) as f:
        assert f.files == list(arrays)
        for name, a in arrays.items():
            assert f[name].dtype == a.dtype
            np.testing.assert_array_equal(f[name], a)


def test_save_npz_is_uncompressed_with_fixed_entry_metadata(tmp_path, arrays):
    path = tmp_path / "a.npz"
    save_npz(path, arrays)
    with zipfile.ZipFile(path) as zf:
        infos = zf.infolist()
        assert [i.filename for i in infos] == [f"{name}.npy" for name in arrays]
        for info in infos:
            assert info.date_time == (1980, 1, 1, 0, 0, 0)
            assert info.compress_type == zipfile.ZIP_STORED
        assert zf.testzip() is None


def test_equal_arrays_give_equal_bytes_at_different_times(tmp_path, arrays, monkeypatch):
    first, second = tmp_path / "first.npz", tmp_path / "second.npz"
    save_npz(first, arrays)
    # the second write happens "years later" (no sleeping: the clock zipfile reads is moved)
    later = time.time() + 3 * 365 * 24 * 3600
    with monkeypatch.context() as m:
        m.setattr(time, "time", lambda: later)
        assert time.localtime(time.time()).tm_year > time.localtime().tm_year  # the fake clock is in use
        save_npz(second, {k: np.array(v, copy=True) for k, v in arrays.items()})
    assert first.read_bytes() == second.read_bytes()


def test_save_npz_bytes_equal_an_archive_built_by_hand(tmp_path, arrays):
    # the documented format, built here independently: stored (uncompressed) entries named <key>.npy,
    # dated 1980-01-01 00:00:00, mode 0644, each holding the .npy bytes of the C-ordered array
    expected = io.BytesIO()
    with zipfile.ZipFile(expected, "w", zipfile.ZIP_STORED) as zf:
        for name, array in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            npy = io.BytesIO()
            np.save(npy, np.array(array, order="C"), allow_pickle=False)
            zf.writestr(info, npy.getvalue())
    save_npz(tmp_path / "a.npz", arrays)
    assert (tmp_path / "a.npz").read_bytes() == expected.getvalue()


def test_different_arrays_give_different_bytes(npz_bytes_of, arrays):
    changed = dict(arrays, y=arrays["y"].copy())
    changed["y"][0] ^= 1
    assert npz_bytes_of(arrays) != npz_bytes_of(changed)
    # the same values with another dtype are another file too
    assert npz_bytes_of({"y": arrays["y"]}) != npz_bytes_of({"y": arrays["y"].astype(np.int16)})


def test_save_npz_overwrites_atomically(tmp_path, arrays):
    path = tmp_path / "a.npz"
    path.write_bytes(b"old contents")
    save_npz(path, arrays)
    assert np.load(path)["y"].tolist() == arrays["y"].tolist()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npz"]


def test_save_npz_failure_leaves_nothing(tmp_path):
    path = tmp_path / "a.npz"
    with pytest.raises(ValueError):  # object arrays are refused (allow_pickle=False)
        save_npz(path, {"ok": np.zeros(3), "bad": np.array([{"a": 1}], dtype=object)})
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- atomic_path


def test_atomic_path_renames_on_success(tmp_path):
    target = tmp_path / "out" / "file.txt"
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp != target
        tmp.write_text("hello")
        assert not target.exists()  # nothing visible until the block succeeds
    assert target.read_text() == "hello"
    assert list(target.parent.iterdir()) == [target]
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask


def test_atomic_path_leaves_nothing_when_the_block_raises(tmp_path):
    target = tmp_path / "file.txt"
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_path(target) as tmp:
            tmp.write_text("half written")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_atomic_path_keeps_the_old_file_when_the_block_raises(tmp_path):
    target = tmp_path / "file.txt"
    target.write_text("previous")
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(target) as tmp:
            tmp.write_text("new")
            raise KeyboardInterrupt
    assert target.read_text() == "previous"
    assert list(tmp_path.iterdir()) == [target]


def test_atomic_path_when_the_block_never_writes(tmp_path):
    target = tmp_path / "file.txt"
    with pytest.raises(ValueError):
        with atomic_path(target):
            raise ValueError
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- load_npz


def test_load_npz_reads_the_named_arrays(tmp_path, arrays):
    path = tmp_path / "a.npz"
    save_npz(path, arrays)
    got = load_npz(path, ("y", "x"))
    assert list(got) == ["y", "x"]
    np.testing.assert_array_equal(got["x"], arrays["x"])
    np.testing.assert_array_equal(got["y"], arrays["y"])


def test_load_npz_missing_file(tmp_path):
    path = tmp_path / "data" / "raw" / "mnist.npz"
    with pytest.raises(FileProblem) as info:
        load_npz(path, ("x",))
    message = str(info.value)
    assert one_line(message)
    assert message == f"{path} is missing" and info.value.path == path and info.value.problem == "missing"


def test_load_npz_missing_key(tmp_path, arrays):
    path = tmp_path / "a.npz"
    save_npz(path, arrays)
    with pytest.raises(UserError) as info:
        load_npz(path, ("x", "nope", "also_not"))
    message = str(info.value)
    assert one_line(message)
    assert "nope" in message and "also_not" in message and info.value.problem == "unreadable"


@pytest.mark.parametrize("keep", [0.5, 0.95, 10])
def test_load_npz_truncated_file(tmp_path, arrays, keep):
    path = tmp_path / "a.npz"
    save_npz(path, arrays)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)] if keep < 1 else data[:keep])
    with pytest.raises(UserError) as info:
        load_npz(path, tuple(arrays))
    message = str(info.value)
    assert one_line(message), message
    assert str(path) in message and "corrupt or truncated" in message


def test_load_npz_flipped_byte_inside_an_entry(tmp_path, arrays):
    path = tmp_path / "a.npz"
    save_npz(path, {"x": arrays["x"]})
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # inside the stored x.npy payload; the zip CRC no longer matches
    path.write_bytes(bytes(data))
    with pytest.raises(UserError) as info:
        load_npz(path, ("x",))
    assert one_line(str(info.value)) and "corrupt" in str(info.value)


def test_load_npz_not_a_zip(tmp_path):
    path = tmp_path / "a.npz"
    path.write_text("this is not an npz\nsecond line\n")
    with pytest.raises(UserError) as info:
        load_npz(path, ("x",))
    assert one_line(str(info.value))


# --------------------------------------------------------------------------- small helpers


def test_sha256_file_matches_hashlib_across_chunks(tmp_path):
    path = tmp_path / "blob"
    payload = bytes(range(256)) * 41 + b"tail"
    path.write_bytes(payload)
    expected = hashlib.sha256(payload).hexdigest()
    assert sha256_file(path) == expected
    assert sha256_file(path, chunk=7) == expected
    (tmp_path / "empty").write_bytes(b"")
    assert sha256_file(tmp_path / "empty") == hashlib.sha256(b"").hexdigest()


def test_save_json(tmp_path):
    path = tmp_path / "m" / "metrics.json"
    obj = {"b": 1, "a": [1.5, "x"]}
    save_json(path, obj)
    text = path.read_text()
    assert text.endswith("\n")
    assert json.loads(text) == obj
    assert list(json.loads(text)) == ["b", "a"]  # key order kept
    assert list(path.parent.iterdir()) == [path]


def test_load_json_and_history_round_trip_and_name_the_bad_file(tmp_path):
    rows = [{"epoch": 1.0, "loss": 2.5}, {"epoch": 2.0, "loss": 1.25}]
    save_history(tmp_path / "h.csv", rows)
    assert load_history(tmp_path / "h.csv") == rows
    (tmp_path / "h.csv").write_text("epoch,loss\n1,abc\n")
    with pytest.raises(FileProblem, match="h.csv is unreadable"):
        load_history(tmp_path / "h.csv")
    save_json(tmp_path / "m.json", {"a": 1})
    assert load_json(tmp_path / "m.json") == {"a": 1}
    (tmp_path / "m.json").write_text("{")
    with pytest.raises(FileProblem) as info:
        load_json(tmp_path / "m.json")
    assert info.value.problem == "unreadable" and one_line(str(info.value))
    with pytest.raises(FileProblem, match="missing"):
        load_json(tmp_path / "none.json")


def test_tensors_round_trip_to_equal_bytes_and_never_unpickle(tmp_path):
    obj = {"config": {"a": 1, "b": "x"}, "w": torch.arange(6.0).reshape(2, 3)}
    save_tensors(tmp_path / "a.pt", obj)
    save_tensors(tmp_path / "b.pt", obj)
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "b.pt").read_bytes()  # not named after a temp file
    back = load_tensors(tmp_path / "a.pt", "thing")
    assert back["config"] == obj["config"] and torch.equal(back["w"], obj["w"])
    torch.save({"f": Fraction(1, 3)}, tmp_path / "pickled.pt")  # an object torch.load(weights_only=True) refuses
    with pytest.raises(FileProblem, match="is not a readable thing"):
        load_tensors(tmp_path / "pickled.pt", "thing")


@pytest.mark.parametrize("damage", ["truncated", "not-a-zip", "refused"])
def test_a_damaged_tensor_file_is_one_line_naming_it(tmp_path, damage):
    path = tmp_path / "t.pt"
    save_tensors(path, {"w": torch.ones(100)})
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:200])
    elif damage == "not-a-zip":
        path.write_text("hello")

    def check(obj):
        if damage == "refused":
            raise ValueError("no 'config' in it")

    with pytest.raises(FileProblem) as info:
        load_tensors(path, "checkpoint", check=check)
    assert one_line(str(info.value)) and str(info.value).startswith(f"{path} is not a readable checkpoint (")
    assert info.value.problem == "unreadable"


def test_one_line_collapses_a_message_and_falls_back_to_the_type():
    assert exception_line(ValueError("a\n  b\tc")) == "a b c"
    assert exception_line(KeyError()) == "KeyError"
    assert exception_line(ValueError("x" * 500), limit=10) == "xxxxxxx..."

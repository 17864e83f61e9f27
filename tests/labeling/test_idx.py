"""labeling.idx: IDX files written by hand with struct (raw and gzip), and the real
Fashion-MNIST files when installed."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from labeling.idx import (
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_DIR,
    IdxError,
    idx_dataset_read,
    idx_read,
)

# type code -> (struct format char, numpy dtype)
CODES = {
    0x08: ("B", np.uint8),
    0x09: ("b", np.int8),
    0x0B: ("h", np.int16),
    0x0C: ("i", np.int32),
    0x0D: ("f", np.float32),
    0x0E: ("d", np.float64),
}


def idx_bytes(values, code: int = 0x08, shape=None) -> bytes:
    """The IDX encoding of ``values`` written field by field with struct (big-endian)."""
    values = np.asarray(values)
    shape = values.shape if shape is None else shape
    char = CODES[code][0]
    header = struct.pack(">BBBB", 0, 0, code, len(shape)) + struct.pack(f">{len(shape)}I", *shape)
    flat = values.ravel().tolist()
    return header + struct.pack(f">{len(flat)}{char}", *flat)


def write(path: Path, data: bytes, gz: bool = False) -> Path:
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gzip"])
def test_round_trip_uint8_images(tmp_path, gz):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4) * 7
    path = write(tmp_path / "images", idx_bytes(images), gz=gz)
    out = idx_read(path)
    assert out.dtype == np.uint8
    assert out.shape == (2, 3, 4)
    np.testing.assert_array_equal(out, images)


@pytest.mark.parametrize("code", sorted(CODES))
def test_dtype_codes_big_endian(tmp_path, code):
    dtype = CODES[code][1]
    if np.issubdtype(dtype, np.floating):
        values = np.array([[-1.5, 0.25, 3e5], [7.0, -0.0, 1 / 3]], dtype=dtype)
    elif dtype == np.uint8:
        values = np.array([[0, 1, 255], [128, 2, 3]], dtype=dtype)
    else:
        info = np.iinfo(dtype)
        values = np.array([[info.min, -1, info.max], [0, 1, 2]], dtype=dtype)
    out = idx_read(write(tmp_path / "x.idx", idx_bytes(values, code)))
    assert out.dtype == dtype and out.dtype.isnative
    assert out.shape == (2, 3)
    np.testing.assert_array_equal(out, values)


def test_labels_1d_and_writable(tmp_path):
    out = idx_read(write(tmp_path / "labels", idx_bytes(np.array([9, 0, 3], np.uint8))))
    assert out.shape == (3,)
    out[0] = 1  # a real copy, not a read-only view of the file's bytes
    assert out.tolist() == [1, 0, 3]


def test_gzip_detected_by_magic_not_name(tmp_path):
    data = idx_bytes(np.array([1, 2], np.uint8))
    raw_named_gz = write(tmp_path / "raw.gz", data)
    gz_named_raw = write(tmp_path / "compressed", data, gz=True)
    assert idx_read(raw_named_gz).tolist() == [1, 2]
    assert idx_read(gz_named_raw).tolist() == [1, 2]


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gzip"])
def test_truncated_payload(tmp_path, gz):
    data = idx_bytes(np.zeros((2, 4, 4), np.uint8))[:-5]
    path = write(tmp_path / "short-images", data, gz=gz)
    with pytest.raises(IdxError, match=r"short-images.*truncated.*needs 32 bytes.*has 27"):
        idx_read(path)


def test_truncated_header(tmp_path):
    data = struct.pack(">BBBB", 0, 0, 8, 3) + struct.pack(">I", 60000)
    with pytest.raises(IdxError, match="truncated header"):
        idx_read(write(tmp_path / "hdr", data))


def test_trailing_bytes(tmp_path):
    data = idx_bytes(np.zeros(4, np.uint8)) + b"\x00\x01\x02"
    with pytest.raises(IdxError, match=r"trailing\.idx.*3 trailing bytes"):
        idx_read(write(tmp_path / "trailing.idx", data))


@pytest.mark.parametrize(
    "data",
    [b"\x01\x00\x08\x01\x00\x00\x00\x01\x05", b"PK\x03\x04rest", b"\x00"],
    ids=["nonzero-magic", "zip", "too-short"],
)
def test_wrong_magic(tmp_path, data):
    with pytest.raises(IdxError, match=r"bad\.idx: not an IDX file"):
        idx_read(write(tmp_path / "bad.idx", data))


def test_unknown_type_code(tmp_path):
    data = struct.pack(">BBBBI", 0, 0, 0x0A, 1, 1) + b"\x00"
    with pytest.raises(IdxError, match="unknown IDX type code 0x0A"):
        idx_read(write(tmp_path / "x", data))


def test_corrupt_gzip(tmp_path):
    data = gzip.compress(idx_bytes(np.zeros(100, np.uint8)))[:-12]
    with pytest.raises(IdxError, match="gzip"):
        idx_read(write(tmp_path / "x.gz", data))


def test_missing_file(tmp_path):
    with pytest.raises(IdxError, match="cannot read"):
        idx_read(tmp_path / "nope")


def test_idx_error_is_value_error():
    assert issubclass(IdxError, ValueError)


def _tiny_dataset(folder: Path, n_train: int = 5, n_test: int = 3, gz: bool = True) -> None:
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        suffix = ".gz" if gz else ""
        images = rng.integers(0, 256, (n, 4, 4), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        write(folder / f"{prefix}-images-idx3-ubyte{suffix}", idx_bytes(images), gz=gz)
        write(folder / f"{prefix}-labels-idx1-ubyte{suffix}", idx_bytes(labels), gz=gz)


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gzip"])
def test_dataset_read(tmp_path, gz):
    _tiny_dataset(tmp_path, gz=gz)
    splits = idx_dataset_read(tmp_path)
    assert set(splits) == {"train", "test"}
    images, labels = splits["train"]
    assert images.dtype == np.uint8 and images.shape == (5, 4, 4)
    assert labels.dtype == np.int64 and labels.tolist() == [0, 1, 2, 3, 4]
    assert splits["test"][0].shape == (3, 4, 4)


def test_dataset_read_one_split_only(tmp_path):
    _tiny_dataset(tmp_path)
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        (tmp_path / name).unlink()
    assert set(idx_dataset_read(tmp_path)) == {"train"}


def test_dataset_missing_labels(tmp_path):
    _tiny_dataset(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(IdxError, match=r"'test' has t10k-images-idx3-ubyte\.gz but no t10k-labels"):
        idx_dataset_read(tmp_path)


def test_dataset_missing_images(tmp_path):
    _tiny_dataset(tmp_path)
    (tmp_path / "train-images-idx3-ubyte.gz").unlink()
    with pytest.raises(IdxError, match="but no train-images"):
        idx_dataset_read(tmp_path)


def test_dataset_count_mismatch(tmp_path):
    _tiny_dataset(tmp_path)
    write(tmp_path / "train-labels-idx1-ubyte.gz", idx_bytes(np.zeros(4, np.uint8)), gz=True)
    with pytest.raises(IdxError, match="'train': 5 images but 4 labels"):
        idx_dataset_read(tmp_path)


def test_dataset_labels_not_1d(tmp_path):
    _tiny_dataset(tmp_path)
    write(tmp_path / "train-labels-idx1-ubyte.gz", idx_bytes(np.zeros((5, 1), np.uint8)), gz=True)
    with pytest.raises(IdxError, match="labels must be 1-D"):
        idx_dataset_read(tmp_path)


def test_dataset_images_not_3d(tmp_path):
    _tiny_dataset(tmp_path)
    write(tmp_path / "train-images-idx3-ubyte.gz", idx_bytes(np.zeros((5, 16), np.uint8)), gz=True)
    with pytest.raises(IdxError, match=r"images must be uint8 \(N, H, W\)"):
        idx_dataset_read(tmp_path)


def test_dataset_empty_dir(tmp_path):
    (tmp_path / "readme.txt").write_text("nothing here")
    with pytest.raises(IdxError, match="no IDX dataset found"):
        idx_dataset_read(tmp_path)


def test_dataset_not_a_dir(tmp_path):
    with pytest.raises(IdxError, match="not a directory"):
        idx_dataset_read(tmp_path / "missing")


@pytest.mark.skipif(not Path(FASHION_MNIST_DIR).is_dir(), reason="Fashion-MNIST not installed")
def test_real_fashion_mnist():
    splits = idx_dataset_read(FASHION_MNIST_DIR)
    train_x, train_y = splits["train"]
    test_x, test_y = splits["test"]
    assert train_x.shape == (60000, 28, 28) and train_y.shape == (60000,)
    assert test_x.shape == (10000, 28, 28) and test_y.shape == (10000,)
    assert train_x.dtype == np.uint8 and train_y.dtype == np.int64
    assert set(np.unique(train_y)) == set(range(10)) == set(np.unique(test_y))
    assert np.bincount(train_y).tolist() == [6000] * 10
    assert FASHION_MNIST_CLASSES[train_y[0]] == "Ankle boot"  # train label 0 is 9
    assert len(FASHION_MNIST_CLASSES) == 10

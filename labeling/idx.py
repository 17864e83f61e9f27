"""Reading IDX files (the MNIST / Fashion-MNIST distribution format), no Django.

Format (LeCun, Cortes & Burges, "The MNIST database of handwritten digits",
http://yann.lecun.com/exdb/mnist/): a 4-byte magic number ``0x00 0x00 <type> <ndim>``, then
``ndim`` big-endian uint32 dimension sizes, then the values in C order, big-endian. Type codes:
``0x08`` uint8, ``0x09`` int8, ``0x0B`` int16, ``0x0C`` int32, ``0x0D`` float32, ``0x0E``
float64. Files are usually distributed gzip-compressed.

Fashion-MNIST (Xiao, Rasul & Vollgraf, "Fashion-MNIST: a Novel Image Dataset for Benchmarking
Machine Learning Algorithms", arXiv:1708.07747, 2017) uses the same files and names as MNIST:
60,000 training and 10,000 test greyscale images of 28 x 28 pixels in 10 classes
(:data:`FASHION_MNIST_CLASSES`, index = label).
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

__all__ = [
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_DIR",
    "IDX_DTYPES",
    "IdxError",
    "idx_dataset_read",
    "idx_read",
]

#: Where the Debian image installs Fashion-MNIST (the four standard ``.gz`` files).
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"

#: Fashion-MNIST class names, index = label (Xiao et al. 2017, Table 1).
FASHION_MNIST_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]

#: IDX type code -> big-endian numpy dtype of the stored values.
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

_GZIP_MAGIC = b"\x1f\x8b"

#: split name -> file stem prefix of the standard MNIST / Fashion-MNIST file names.
_SPLITS = {"train": "train", "test": "t10k"}


class IdxError(ValueError):
    """An IDX file or dataset directory cannot be read: missing, malformed, or inconsistent."""


def _read_bytes(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise IdxError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if raw[:2] != _GZIP_MAGIC:
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise IdxError(f"{path}: corrupt or truncated gzip data ({exc})") from None


def idx_read(path: str | Path) -> np.ndarray:
    """Read one IDX file into an array of the shape its header declares.

    The file is decompressed first when it starts with the gzip magic (``1f 8b``), whatever
    its name; otherwise it is read as raw IDX.

    Args:
        path: the file.

    Returns:
        An array of shape ``(d_1, ..., d_ndim)`` from the header, in native byte order, with
        the dtype of the type code: uint8 (``0x08``), int8 (``0x09``), int16 (``0x0B``),
        int32 (``0x0C``), float32 (``0x0D``) or float64 (``0x0E``). E.g. Fashion-MNIST train
        images: uint8 ``(60000, 28, 28)``; labels: uint8 ``(60000,)``.

    Raises:
        IdxError: unreadable file or corrupt gzip; shorter than its header; first two magic
            bytes not zero; unknown type code; payload shorter (truncated) or longer (trailing
            bytes) than the product of the dimensions times the item size. The message names
            the file.
    """
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4:
        raise IdxError(f"{path}: not an IDX file: {len(data)} bytes, shorter than the magic")
    if data[0] != 0 or data[1] != 0:
        raise IdxError(
            f"{path}: not an IDX file: magic {data[:4].hex(' ')} does not start with 00 00"
        )
    type_code, ndim = data[2], data[3]
    if type_code not in IDX_DTYPES:
        known = ", ".join(f"0x{c:02X}" for c in IDX_DTYPES)
        raise IdxError(f"{path}: unknown IDX type code 0x{type_code:02X} (known: {known})")
    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        raise IdxError(
            f"{path}: truncated header: {ndim} dimensions need {header_len} bytes, "
            f"file has {len(data)}"
        )
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = IDX_DTYPES[type_code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    payload = len(data) - header_len
    if payload < expected:
        raise IdxError(
            f"{path}: truncated: shape {shape} of {dtype.name} needs {expected} bytes of data, "
            f"file has {payload}"
        )
    if payload > expected:
        raise IdxError(
            f"{path}: {payload - expected} trailing bytes after the {expected} bytes of data "
            f"that shape {shape} of {dtype.name} needs"
        )
    values = np.frombuffer(data, dtype=dtype, offset=header_len).reshape(shape)
    return values.astype(dtype.newbyteorder("="), copy=True)


def _find(directory: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        candidate = directory / name
        if candidate.is_file():
            return candidate
    return None


def idx_dataset_read(directory: str | Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Read the standard MNIST-style image/label pairs found in a directory.

    Looks for ``train-images-idx3-ubyte`` + ``train-labels-idx1-ubyte`` (split ``"train"``)
    and ``t10k-images-idx3-ubyte`` + ``t10k-labels-idx1-ubyte`` (split ``"test"``), each
    raw or with a ``.gz`` suffix (the raw name wins if both exist). Either split may be
    absent, but not both.

    Args:
        directory: the folder, e.g. :data:`FASHION_MNIST_DIR`.

    Returns:
        split name -> ``(images, labels)``: images uint8 ``(N, H, W)``, labels int64 ``(N,)``
        (values as stored; Fashion-MNIST: 0..9, see :data:`FASHION_MNIST_CLASSES`).

    Raises:
        IdxError: not a directory; no split with both files; a split with images but no
            labels or labels but no images; images not 3-D uint8; labels not 1-D integers;
            different numbers of images and labels; and every error of :func:`idx_read`.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise IdxError(f"{directory}: not a directory")
    splits: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for split, prefix in _SPLITS.items():
        images_path = _find(directory, f"{prefix}-images-idx3-ubyte")
        labels_path = _find(directory, f"{prefix}-labels-idx1-ubyte")
        if images_path is None and labels_path is None:
            continue
        if labels_path is None:
            raise IdxError(
                f"{directory}: split {split!r} has {images_path.name} but no "
                f"{prefix}-labels-idx1-ubyte[.gz]"
            )
        if images_path is None:
            raise IdxError(
                f"{directory}: split {split!r} has {labels_path.name} but no "
                f"{prefix}-images-idx3-ubyte[.gz]"
            )
        images = idx_read(images_path)
        labels = idx_read(labels_path)
        if images.ndim != 3 or images.dtype != np.uint8:
            raise IdxError(
                f"{images_path}: images must be uint8 (N, H, W), got {images.dtype.name} "
                f"{images.shape}"
            )
        if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
            raise IdxError(
                f"{labels_path}: labels must be 1-D integers, got {labels.dtype.name} "
                f"{labels.shape}"
            )
        if len(images) != len(labels):
            raise IdxError(
                f"{directory}: split {split!r}: {len(images)} images but {len(labels)} labels"
            )
        splits[split] = (images, labels.astype(np.int64))
    if not splits:
        raise IdxError(
            f"{directory}: no IDX dataset found (expected train-images-idx3-ubyte[.gz] + "
            f"train-labels-idx1-ubyte[.gz] and/or t10k-images-idx3-ubyte[.gz] + "
            f"t10k-labels-idx1-ubyte[.gz])"
        )
    return splits

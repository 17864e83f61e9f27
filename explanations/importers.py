"""Readers that turn an ImageFolder directory, a CSV/JSON manifest or a zip archive into
:class:`~explanations.services.datasets.ImageSource` records (no database access here).

Layouts:

* ImageFolder: ``root/<class name>/<image>``; classes are the sorted folder names
  (torchvision's convention) unless a label space is given.
* Manifest (``.csv`` or ``.json``): rows with ``file`` (relative to the manifest) and
  ``label``; optional ``split``, a box ``x0, y0, x1, y1`` with ``box_units`` ("px" or "norm":
  fractions of width and height), and ``mask`` (a binary image file of the item's size).
* Zip: an ImageFolder tree, or a ``manifest.csv`` / ``manifest.json`` at its top level (or in
  its single top folder). Members are read in memory, never extracted; absolute paths, ``..``
  and archives above the size limit are refused.
"""

from __future__ import annotations

import csv
import io
import json
import posixpath
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


class ImportFormatError(ValueError):
    """The folder, manifest or archive itself is unusable (nothing was imported)."""


@dataclass(frozen=True)
class RegionSpec:
    """A ground-truth region as given in a manifest: a box or a mask file's bytes."""

    kind: str  # "box" | "mask"
    box: tuple[float, float, float, float] | None = None
    units: str = "px"  # "px" | "norm"
    mask: bytes | None = None
    label: str = ""


@dataclass(frozen=True)
class RawImage:
    """One image file found by a reader, before decoding."""

    name: str
    data: Callable[[], bytes]
    label: str | None = None
    split: str = ""
    regions: tuple[RegionSpec, ...] = ()
    problem: str = ""  # set when the row itself is broken (missing file, bad box)


@dataclass
class Listing:
    """What a reader found: the label space and the images (read lazily)."""

    class_names: list[str]
    images: list[RawImage] = field(default_factory=list)


def read_folder(root: str | Path, *, class_names: Sequence[str] | None = None) -> Listing:
    """List an ImageFolder tree.

    Raises:
        ImportFormatError: not a directory, or no class folder with images.
    """
    root = Path(root)
    if not root.is_dir():
        raise ImportFormatError(f"{root}: not a directory")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    images = []
    for folder in folders:
        for path in sorted(folder.rglob("*")):
            if path.is_file() and not path.name.startswith("."):
                images.append(
                    RawImage(
                        name=path.relative_to(root).as_posix(),
                        data=path.read_bytes,
                        label=folder.name,
                    )
                )
    if not images:
        raise ImportFormatError(
            f"{root}: no class folders with files (expected root/<class>/<image>)"
        )
    return Listing(class_names=list(class_names or [f.name for f in folders]), images=images)


def read_manifest(path: str | Path, *, class_names: Sequence[str] | None = None) -> Listing:
    """Read a CSV or JSON manifest; files are resolved relative to the manifest's folder.

    Raises:
        ImportFormatError: unreadable manifest, unknown suffix, or no ``file`` column.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ImportFormatError(f"{path.name}: cannot read manifest ({exc})") from None
    base = path.parent

    def opener(relative: str) -> Callable[[], bytes] | None:
        target = (base / relative).resolve()
        if base.resolve() not in target.parents or not target.is_file():
            return None
        return target.read_bytes

    return _manifest_rows(_parse_manifest(text, path.name), opener, class_names)


def read_zip(data: bytes, *, class_names: Sequence[str] | None = None, max_bytes: int) -> Listing:
    """List a zip archive (ImageFolder layout or a manifest inside), without extracting it.

    Raises:
        ImportFormatError: not a zip, unsafe member names, or above ``max_bytes`` uncompressed.
    """
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as exc:
        raise ImportFormatError(f"not a zip archive ({exc})") from None
    members = [m for m in archive.infolist() if not m.is_dir()]
    total = sum(m.file_size for m in members)
    if total > max_bytes:
        raise ImportFormatError(
            f"the archive unpacks to {total} bytes, above the limit of {max_bytes}"
        )
    names = []
    for m in members:
        pure = PurePosixPath(m.filename)
        if pure.is_absolute() or ".." in pure.parts:
            raise ImportFormatError(f"unsafe path in archive: {m.filename!r}")
        if not any(part.startswith((".", "__MACOSX")) for part in pure.parts):
            names.append(m.filename)
    tops = {PurePosixPath(n).parts[0] for n in names}
    prefix = ""
    if len(tops) == 1 and all(len(PurePosixPath(n).parts) > 1 for n in names):
        prefix = next(iter(tops)) + "/"  # everything inside one top folder

    def reader(name: str) -> Callable[[], bytes]:
        return lambda: archive.read(name)

    available = set(names)
    for manifest in ("manifest.csv", "manifest.json"):
        if prefix + manifest in names:
            text = archive.read(prefix + manifest).decode("utf-8-sig")

            def opener(relative: str) -> Callable[[], bytes] | None:
                name = posixpath.normpath(prefix + relative)
                return reader(name) if name in available else None

            return _manifest_rows(_parse_manifest(text, manifest), opener, class_names)
    images = _zip_folder_images(names, prefix, reader)
    if not images and prefix:
        # ``cat/a.png, cat/b.png`` is a one-class ImageFolder, not loose files in a top folder.
        images = _zip_folder_images(names, "", reader)
    if not images:
        raise ImportFormatError("the archive has neither class folders nor a manifest.csv/json")
    found = sorted({img.label for img in images if img.label})
    return Listing(class_names=list(class_names or found), images=images)


def _zip_folder_images(
    names: list[str], prefix: str, reader: Callable[[str], Callable[[], bytes]]
) -> list[RawImage]:
    images = []
    for name in sorted(names):
        parts = PurePosixPath(name[len(prefix) :]).parts
        if len(parts) >= 2:
            images.append(RawImage(name=name[len(prefix) :], data=reader(name), label=parts[0]))
    return images


def _parse_manifest(text: str, name: str) -> list[dict]:
    if name.endswith(".json"):
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ImportFormatError(f"{name}: not valid JSON ({exc})") from None
        if isinstance(rows, dict):
            rows = rows.get("items", [])
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise ImportFormatError(f"{name}: expected a list of objects (or {{'items': [...]}})")
    elif name.endswith(".csv"):
        rows = list(csv.DictReader(io.StringIO(text)))
    else:
        raise ImportFormatError(f"{name}: a manifest must be .csv or .json")
    if rows and "file" not in rows[0]:
        raise ImportFormatError(f"{name}: no 'file' column (columns: {sorted(rows[0])})")
    return rows


def _manifest_rows(
    rows: list[dict],
    opener: Callable[[str], Callable[[], bytes] | None],
    class_names: Sequence[str] | None,
) -> Listing:
    images = []
    for number, row in enumerate(rows, start=2):
        file = str(row.get("file") or "").strip()
        label = str(row.get("label") if row.get("label") is not None else "").strip() or None
        name = file or f"row {number}"
        data = opener(file) if file else None
        problem = "" if data else f"row {number}: file {file!r} not found next to the manifest"
        regions: list[RegionSpec] = []
        try:
            regions.extend(_row_regions(row, opener))
        except ValueError as exc:
            problem = problem or f"row {number}: {exc}"
        images.append(
            RawImage(
                name=name,
                data=data or (lambda: b""),
                label=label,
                split=str(row.get("split") or "").strip(),
                regions=tuple(regions),
                problem=problem,
            )
        )
    found = sorted({img.label for img in images if img.label})
    return Listing(class_names=list(class_names or found), images=images)


def _row_regions(row: dict, opener) -> Iterator[RegionSpec]:
    coords = [row.get(k) for k in ("x0", "y0", "x1", "y1")]
    if any(c not in (None, "") for c in coords):
        try:
            box = tuple(float(c) for c in coords)
        except (TypeError, ValueError):
            raise ValueError(f"box x0, y0, x1, y1 must all be numbers, got {coords}") from None
        units = str(row.get("box_units") or "px").strip()
        if units not in ("px", "norm"):
            raise ValueError(f"box_units must be 'px' or 'norm', got {units!r}")
        yield RegionSpec(kind="box", box=box, units=units)  # type: ignore[arg-type]
    mask = str(row.get("mask") or "").strip()
    if mask:
        read = opener(mask)
        if read is None:
            raise ValueError(f"mask file {mask!r} not found")
        yield RegionSpec(kind="mask", mask=read())

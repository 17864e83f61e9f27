"""Dataset import: every image through one decoder, per-item reports, duplicates detected."""

from __future__ import annotations

import io
import logging
import zipfile
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from django.conf import settings
from django.core.files.base import ContentFile
from django.db import IntegrityError, transaction
from django.utils import timezone
from PIL import Image

from ..imageio import ImageDecodeError, encode_png, image_decode
from ..importers import (
    ImportFormatError,
    Listing,
    RegionSpec,
    read_folder,
    read_manifest,
    read_zip,
)
from ..models import Dataset, DatasetImportJob, Item, JobStatus, Region, RegionKind

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImageSource:
    """One image to import: the file bytes, a unique name, and its label if known."""

    name: str
    data: bytes
    label_index: int | None = None
    label_name: str = ""
    source: str = ""
    split: str = ""
    regions: tuple[RegionSpec, ...] = ()


@dataclass
class ImportReport:
    """What a dataset import did: imported names, duplicates skipped, failures with reasons."""

    imported: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)

    def as_dict(self) -> dict:
        """JSON-serialisable: counts plus every skipped file and why."""
        return {
            "imported": len(self.imported),
            "duplicates": list(self.duplicates),
            "failed": [{"file": name, "reason": reason} for name, reason in self.failed],
        }


def dataset_import(
    *,
    dataset: Dataset,
    sources: Iterable[ImageSource],
    max_pixels: int | None = None,
    progress=None,
) -> ImportReport:
    """Import images into a dataset, one transaction per image.

    Every image is decoded and normalised to an RGB PNG (RGBA composited on white, grayscale
    expanded, EXIF orientation applied). A file that fails to decode is reported in
    ``failed`` with the reason and does not stop the others; a file whose name or content is
    already in the dataset is reported in ``duplicates``. Regions (boxes, masks) are
    validated against the decoded image first: one that does not fit fails its item, and
    nothing of that item is stored. ``progress(n)`` is called after each file.

    Returns:
        An :class:`ImportReport`.
    """
    report = ImportReport()
    limit = max_pixels or settings.STUDYPLATFORM_MAX_IMAGE_PIXELS

    def tick() -> None:  # after every file, whatever became of it
        if progress:
            progress(len(report.imported) + len(report.failed) + len(report.duplicates))

    for src in sources:
        try:
            decoded = image_decode(src.data, name=src.name, max_pixels=limit)
            regions = [
                _region_prepare(spec, decoded.width, decoded.height, src.name)
                for spec in src.regions
            ]
        except (ImageDecodeError, RegionError) as exc:
            report.failed.append((src.name, str(exc)))
            tick()
            continue
        if (
            dataset.items.filter(name=src.name).exists()
            or dataset.items.filter(sha256=decoded.sha256).exists()
        ):
            report.duplicates.append(src.name)
            tick()
            continue
        item = None
        try:
            with transaction.atomic():
                item = Item(
                    dataset=dataset,
                    name=src.name,
                    original_name=src.name.rsplit("/", 1)[-1][:300],
                    sha256=decoded.sha256,
                    width=decoded.width,
                    height=decoded.height,
                    original_mode=decoded.original_mode,
                    label_index=src.label_index,
                    label_name=src.label_name,
                    source=src.source,
                    split=src.split[:30],
                )
                item.image.save(
                    f"{dataset.pk}-{decoded.sha256[:16]}.png",
                    ContentFile(encode_png(decoded.pixels)),
                    save=False,
                )
                item.save()
                for region in regions:
                    region.item = item
                    if region.mask_png is not None:
                        region.mask.save(
                            f"{item.pk}-mask.png", ContentFile(region.mask_png), save=False
                        )
                    region.save()
        except IntegrityError:
            if item is not None and item.image:
                item.image.delete(save=False)  # a concurrent import stored it first
            report.duplicates.append(src.name)
            tick()
            continue
        report.imported.append(src.name)
        tick()
    return report


class RegionError(ValueError):
    """A box or mask does not fit its image."""


def _region_prepare(spec: RegionSpec, width: int, height: int, name: str) -> Region:
    """Validate a region against its decoded image; boxes in pixels, masks as binary PNG."""
    if spec.kind == RegionKind.BOX and spec.box is not None:
        x0, y0, x1, y1 = spec.box
        if spec.units == "norm":
            if not all(0.0 <= v <= 1.0 for v in spec.box):
                raise RegionError(f"{name}: normalised box {spec.box} has values outside [0, 1]")
            x0, x1, y0, y1 = x0 * width, x1 * width, y0 * height, y1 * height
        if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
            raise RegionError(
                f"{name}: box ({x0:g}, {y0:g}, {x1:g}, {y1:g}) px does not fit the "
                f"{width}x{height} image (need 0 <= x0 < x1 <= width, 0 <= y0 < y1 <= height)"
            )
        region = Region(kind=RegionKind.BOX, label=spec.label, x0=x0, y0=y0, x1=x1, y1=y1)
        region.mask_png = None
        return region
    if spec.kind == RegionKind.MASK and spec.mask is not None:
        try:
            with Image.open(io.BytesIO(spec.mask)) as img:
                img.load()
                mask = np.asarray(img.convert("L"))
        except Exception as exc:
            raise RegionError(f"{name}: mask is not a readable image ({exc})") from None
        if mask.shape != (height, width):
            raise RegionError(
                f"{name}: mask is {mask.shape[1]}x{mask.shape[0]}, the image is {width}x{height}"
            )
        if not mask.any():
            raise RegionError(f"{name}: mask is empty (no nonzero pixel)")
        region = Region(kind=RegionKind.MASK, label=spec.label)
        region.mask_png = encode_png(np.where(mask > 0, 255, 0).astype(np.uint8))
        return region
    raise RegionError(f"{name}: region of kind {spec.kind!r} without data")


def dataset_import_listing(
    *, dataset: Dataset, listing: Listing, source: str = "", progress=None
) -> ImportReport:
    """Import what a reader of :mod:`explanations.importers` found.

    The dataset's label space is set from the listing on the first import; later imports must
    use its names (a label outside it fails that file with a message). Rows a reader already
    found broken (missing file, bad box) are reported as failed. ``progress(n)`` is called
    after every file of the listing, ``n`` counting them all (imported, duplicate or failed).
    """
    if not dataset.class_names and listing.class_names:
        dataset.class_names = list(listing.class_names)
        dataset.save(update_fields=["class_names"])
    names = list(dataset.class_names)
    report = ImportReport()
    seen = {"n": 0}

    def counted(_n: int = 0) -> None:  # dataset_import counts per batch; count the listing
        seen["n"] += 1
        if progress:
            progress(seen["n"])

    good: list[ImageSource] = []
    for raw in listing.images:
        if raw.problem:
            report.failed.append((raw.name, raw.problem))
            counted()
            continue
        if raw.label is not None and raw.label not in names:
            report.failed.append(
                (raw.name, f"label {raw.label!r} is not one of the dataset's {len(names)} classes")
            )
            counted()
            continue
        try:
            data = raw.data()
        except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
            # A corrupt zip member or a file gone since listing fails that file, not the import.
            report.failed.append((raw.name, f"{raw.name}: cannot read the file ({exc})"))
            counted()
            continue
        good.append(
            ImageSource(
                name=raw.name,
                data=data,
                label_index=names.index(raw.label) if raw.label is not None else None,
                label_name=raw.label or "",
                source=source,
                split=raw.split,
                regions=raw.regions,
            )
        )
        if len(good) >= 64:  # bounded memory: import in batches
            _merge(report, dataset_import(dataset=dataset, sources=good, progress=counted))
            good = []
    _merge(report, dataset_import(dataset=dataset, sources=good, progress=counted))
    return report


def _merge(into: ImportReport, other: ImportReport) -> None:
    into.imported += other.imported
    into.duplicates += other.duplicates
    into.failed += other.failed


class DatasetNameTaken(ValueError):
    """A dataset with that name exists."""


def dataset_create(
    *, name: str, description: str = "", class_names: Sequence[str] = (), owner=None
) -> Dataset:
    """Create an empty dataset, optionally with its label space.

    Raises:
        DatasetNameTaken: the name is in use.
        ValueError: blank name, or blank or repeated class names.
    """
    name = name.strip()
    if not name:
        raise ValueError("a dataset needs a name")
    names = [str(c).strip() for c in class_names]
    if any(not n for n in names) or len(set(names)) != len(names):
        raise ValueError("class names must be non-blank and unique")
    try:
        with transaction.atomic():
            return Dataset.objects.create(
                name=name, description=description, class_names=names, owner=owner
            )
    except IntegrityError:
        raise DatasetNameTaken(f"a dataset named {name!r} already exists") from None


def dataset_import_job_create(
    *, dataset: Dataset, source_format: str, source_path: str | Path
) -> DatasetImportJob:
    """Queue a background import (queue ``cpu``) of a server-side folder, manifest or zip.

    Raises:
        ValueError: unknown format, or the path does not exist.
    """
    if source_format not in IMPORT_FORMATS:
        raise ValueError(f"unknown import format {source_format!r}; use one of {IMPORT_FORMATS}")
    path = Path(source_path)
    if not path.exists():
        raise ValueError(f"{path}: no such file or folder")
    with transaction.atomic():
        job = DatasetImportJob.objects.create(
            dataset=dataset, source_format=source_format, source_path=str(path.resolve())
        )
        transaction.on_commit(lambda: _import_enqueue(job.pk))
    return job


def _import_enqueue(job_id: int) -> None:
    from ..tasks import dataset_import_job_run_task

    dataset_import_job_run_task.delay(job_id)


IMPORT_FORMATS = ("folder", "manifest", "zip")


def dataset_listing_read(source_format: str, path: str | Path, class_names=None) -> Listing:
    """Read a folder, manifest or zip file into a :class:`Listing`.

    Raises:
        ImportFormatError: the source itself is unusable.
    """
    if source_format == "folder":
        return read_folder(path, class_names=class_names)
    if source_format == "manifest":
        return read_manifest(path, class_names=class_names)
    if source_format == "zip":
        return read_zip(
            Path(path).read_bytes(),
            class_names=class_names,
            max_bytes=settings.STUDYPLATFORM_MAX_ZIP_BYTES,
        )
    raise ImportFormatError(f"unknown import format {source_format!r}")


def dataset_import_job_run(*, job_id: int) -> DatasetImportJob:
    """Run a queued import, updating ``processed_files`` as it goes; idempotent (files already
    imported are reported as duplicates on a re-run)."""
    job = DatasetImportJob.objects.select_related("dataset").get(pk=job_id)
    if job.status in (JobStatus.SUCCEEDED, JobStatus.FAILED):
        return job
    DatasetImportJob.objects.filter(pk=job.pk).update(status=JobStatus.RUNNING)
    try:
        listing = dataset_listing_read(
            job.source_format, job.source_path, class_names=job.dataset.class_names or None
        )
    except (ImportFormatError, OSError) as exc:
        DatasetImportJob.objects.filter(pk=job.pk).update(
            status=JobStatus.FAILED, error=str(exc), finished_at=timezone.now()
        )
        job.refresh_from_db()
        return job
    DatasetImportJob.objects.filter(pk=job.pk).update(total_files=len(listing.images))
    done = {"n": 0}

    def progress(_n: int) -> None:
        done["n"] += 1
        if done["n"] % 10 == 0:
            DatasetImportJob.objects.filter(pk=job.pk).update(processed_files=done["n"])

    report = dataset_import_listing(
        dataset=job.dataset,
        listing=listing,
        source=f"{job.source_format}:{Path(job.source_path).name}",
        progress=progress,
    )
    DatasetImportJob.objects.filter(pk=job.pk).update(
        status=JobStatus.SUCCEEDED,
        processed_files=len(listing.images),
        report=report.as_dict(),
        finished_at=timezone.now(),
    )
    job.refresh_from_db()
    return job

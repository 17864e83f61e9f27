"""Dataset import: every image through one decoder, per-item reports, duplicates detected."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

from django.conf import settings
from django.core.files.base import ContentFile
from django.db import IntegrityError, transaction

from ..imageio import ImageDecodeError, encode_png, image_decode
from ..models import (
    Dataset,
    Item,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImageSource:
    """One image to import: the file bytes, a unique name, and its label if known."""

    name: str
    data: bytes
    label_index: int | None = None
    label_name: str = ""
    source: str = ""


@dataclass
class ImportReport:
    """What a dataset import did: imported names, duplicates skipped, failures with reasons."""

    imported: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)


def dataset_import(
    *, dataset: Dataset, sources: Iterable[ImageSource], max_pixels: int | None = None
) -> ImportReport:
    """Import images into a dataset, one transaction per image.

    Every image is decoded and normalised to an RGB PNG (RGBA composited on white, grayscale
    expanded, EXIF orientation applied). A file that fails to decode is reported in
    ``failed`` with the reason and does not stop the others; a file whose name or content is
    already in the dataset is reported in ``duplicates``.

    Returns:
        An :class:`ImportReport`.
    """
    report = ImportReport()
    limit = max_pixels or settings.STUDYPLATFORM_MAX_IMAGE_PIXELS
    for src in sources:
        try:
            decoded = image_decode(src.data, name=src.name, max_pixels=limit)
        except ImageDecodeError as exc:
            report.failed.append((src.name, str(exc)))
            continue
        if (
            dataset.items.filter(name=src.name).exists()
            or dataset.items.filter(sha256=decoded.sha256).exists()
        ):
            report.duplicates.append(src.name)
            continue
        try:
            with transaction.atomic():
                item = Item(
                    dataset=dataset,
                    name=src.name,
                    sha256=decoded.sha256,
                    width=decoded.width,
                    height=decoded.height,
                    original_mode=decoded.original_mode,
                    label_index=src.label_index,
                    label_name=src.label_name,
                    source=src.source,
                )
                item.image.save(
                    f"{dataset.pk}-{decoded.sha256[:16]}.png",
                    ContentFile(encode_png(decoded.pixels)),
                    save=False,
                )
                item.save()
        except IntegrityError:
            item.image.delete(save=False)  # a concurrent import stored it first
            report.duplicates.append(src.name)
            continue
        report.imported.append(src.name)
    return report

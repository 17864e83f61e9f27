"""dataset_import: every image decoded and stored as an RGB PNG, failures and duplicates reported."""

from __future__ import annotations

import hashlib
import io

import numpy as np
import pytest
from PIL import Image

from explanations.models import Dataset, Item
from explanations.services import ImageSource, ImportReport, dataset_import


def encode(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def stored_pixels(item: Item) -> tuple[str, np.ndarray]:
    """The stored file's "FORMAT/MODE" and its pixels, read back with Pillow."""
    with item.image.open("rb") as fh:
        data = fh.read()
    with Image.open(io.BytesIO(data)) as img:
        return f"{img.format}/{img.mode}", np.asarray(img).copy()


GOOD = np.random.default_rng(0).integers(0, 256, (12, 16, 3), dtype=np.uint8)
RGBA = np.array(
    [[[0, 0, 0, 0], [255, 0, 0, 128]], [[0, 255, 0, 255], [10, 20, 30, 0]]], dtype=np.uint8
)
GRAY = (np.arange(6, dtype=np.uint8) * 40).reshape(2, 3)


def make_sources() -> list[ImageSource]:
    good = encode(Image.fromarray(GOOD), "PNG")
    jpeg = encode(Image.fromarray(GOOD), "JPEG")
    return [
        ImageSource(name="good.png", data=good, label_index=3, label_name="three", source="unit"),
        ImageSource(name="broken.jpg", data=jpeg[: len(jpeg) // 2], label_index=1),
        ImageSource(name="alpha.png", data=encode(Image.fromarray(RGBA, mode="RGBA"), "PNG")),
        ImageSource(name="gray.png", data=encode(Image.fromarray(GRAY, mode="L"), "PNG")),
        ImageSource(name="good-copy.png", data=good, label_index=3),
    ]


@pytest.fixture
def dataset(db):
    return Dataset.objects.create(name="Unit photos")


@pytest.mark.django_db
def test_import_reports_imported_failed_and_duplicates_exactly(dataset):
    report = dataset_import(dataset=dataset, sources=make_sources())

    assert isinstance(report, ImportReport)
    assert report.imported == ["good.png", "alpha.png", "gray.png"]
    assert report.duplicates == ["good-copy.png"]
    assert [name for name, _ in report.failed] == ["broken.jpg"]
    reason = report.failed[0][1]
    assert reason.startswith("broken.jpg: ")
    assert "truncated or corrupt" in reason
    assert sorted(dataset.items.values_list("name", flat=True)) == [
        "alpha.png",
        "good.png",
        "gray.png",
    ]


@pytest.mark.django_db
def test_imported_items_are_stored_as_rgb_pngs_with_the_decoded_pixels(dataset):
    sources = make_sources()
    dataset_import(dataset=dataset, sources=sources)
    items = {item.name: item for item in dataset.items.all()}

    fmt, good = stored_pixels(items["good.png"])
    assert fmt == "PNG/RGB"
    assert good.shape == (12, 16, 3)
    np.testing.assert_array_equal(good, GOOD)

    fmt, alpha = stored_pixels(items["alpha.png"])
    assert fmt == "PNG/RGB"
    # transparent -> white; (255, 0, 0, 128) over white -> (255, 127, 127); opaque unchanged
    assert alpha.tolist() == [[[255, 255, 255], [255, 127, 127]], [[0, 255, 0], [255, 255, 255]]]

    fmt, gray = stored_pixels(items["gray.png"])
    assert fmt == "PNG/RGB"
    assert gray.shape == (2, 3, 3)
    for channel in range(3):
        np.testing.assert_array_equal(gray[..., channel], GRAY)


@pytest.mark.django_db
def test_imported_items_keep_metadata_of_the_original_file(dataset):
    sources = {src.name: src for src in make_sources()}
    dataset_import(dataset=dataset, sources=sources.values())
    items = {item.name: item for item in dataset.items.all()}

    good = items["good.png"]
    assert (good.width, good.height) == (16, 12)
    assert good.sha256 == hashlib.sha256(sources["good.png"].data).hexdigest()
    assert (good.label_index, good.label_name, good.source) == (3, "three", "unit")
    assert good.original_mode == "RGB"
    assert good.has_label is True
    assert items["alpha.png"].original_mode == "RGBA"
    assert items["alpha.png"].label_index is None
    assert items["alpha.png"].has_label is False
    assert items["gray.png"].original_mode == "L"
    assert (items["gray.png"].width, items["gray.png"].height) == (3, 2)


@pytest.mark.django_db
def test_reimport_reports_every_decodable_image_as_duplicate_and_creates_nothing(dataset):
    dataset_import(dataset=dataset, sources=make_sources())
    before = list(dataset.items.order_by("pk").values_list("pk", "name", "image"))

    report = dataset_import(dataset=dataset, sources=make_sources())

    assert report.imported == []
    assert report.duplicates == ["good.png", "alpha.png", "gray.png", "good-copy.png"]
    assert [name for name, _ in report.failed] == ["broken.jpg"]
    assert list(dataset.items.order_by("pk").values_list("pk", "name", "image")) == before


@pytest.mark.django_db
def test_same_name_with_different_content_is_a_duplicate(dataset):
    first = encode(Image.fromarray(GOOD), "PNG")
    second = encode(Image.fromarray(255 - GOOD), "PNG")
    dataset_import(dataset=dataset, sources=[ImageSource(name="a.png", data=first)])
    report = dataset_import(dataset=dataset, sources=[ImageSource(name="a.png", data=second)])
    assert report.duplicates == ["a.png"]
    assert report.imported == []
    assert dataset.items.get().sha256 == hashlib.sha256(first).hexdigest()


@pytest.mark.django_db
def test_same_content_may_be_imported_into_two_datasets(dataset):
    other = Dataset.objects.create(name="Other photos")
    data = encode(Image.fromarray(GOOD), "PNG")
    assert dataset_import(dataset=dataset, sources=[ImageSource("a.png", data)]).imported == [
        "a.png"
    ]
    assert dataset_import(dataset=other, sources=[ImageSource("a.png", data)]).imported == ["a.png"]
    assert Item.objects.count() == 2


@pytest.mark.django_db
def test_image_above_the_pixel_limit_fails_without_stopping_the_others(dataset):
    small = encode(Image.fromarray(GOOD[:4, :4]), "PNG")  # 16 pixels
    large = encode(Image.fromarray(GOOD), "PNG")  # 192 pixels
    report = dataset_import(
        dataset=dataset,
        sources=[ImageSource("large.png", large), ImageSource("small.png", small)],
        max_pixels=100,
    )
    assert report.imported == ["small.png"]
    assert report.failed == [("large.png", "large.png: 16x12 pixels exceeds the limit of 100")]


@pytest.mark.django_db
def test_empty_source_list_imports_nothing(dataset):
    report = dataset_import(dataset=dataset, sources=[])
    assert (report.imported, report.duplicates, report.failed) == ([], [], [])
    assert not dataset.items.exists()

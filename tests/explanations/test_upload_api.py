"""POST /api/datasets/<id>/items/: hostile and awkward uploads through the real API.

Every answer is 201 or a 4xx naming the problem, never a 500; the content, not the file name,
decides the format; refused uploads leave nothing behind (no row, no file).
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from PIL import Image, ImageFile

from explanations.models import Dataset, Item

GOOD = np.random.default_rng(7).integers(0, 256, (10, 12, 3), dtype=np.uint8)


def encode(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def png_header_only(width: int, height: int) -> bytes:
    """A tiny, well-formed PNG whose IHDR claims ``width`` x ``height`` RGB pixels.

    The IDAT holds a few bytes only: decoding it would allocate the full image and then find
    the data truncated, so the upload must be refused from the header alone.
    """
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB, no interlace
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + png_chunk(b"IEND", b"")
    )


def cmyk_jpeg() -> bytes:
    """Left half red, right half blue, in CMYK."""
    img = Image.new("CMYK", (8, 8), (0, 255, 255, 0))
    img.paste((255, 255, 0, 0), (4, 0, 8, 8))
    return encode(img, "JPEG", quality=95)


def palette_png_with_transparency() -> bytes:
    """Index 0 opaque green, index 1 fully transparent red; the top row transparent."""
    img = Image.new("P", (5, 4), 0)
    img.putpalette([0, 200, 0, 255, 0, 0] + [0] * (254 * 3))
    img.paste(1, (0, 0, 5, 1))
    return encode(img, "PNG", transparency=1)


@pytest.fixture
def media(settings, tmp_path) -> Path:
    """A private MEDIA_ROOT, so the files under items/ are this test's alone."""
    settings.MEDIA_ROOT = str(tmp_path / "media")
    return tmp_path / "media"


@pytest.fixture
def dataset(db) -> Dataset:
    return Dataset.objects.create(name="Uploads")


@pytest.fixture
def staff(co_researcher) -> Client:
    client = Client()
    assert client.login(username="co", password="pw-co")
    return client


def upload(client: Client, dataset: Dataset, data: bytes | None, filename: str = "f.png", **fields):
    payload = dict(fields)
    if data is not None:
        payload["file"] = SimpleUploadedFile(
            filename, data, content_type="application/octet-stream"
        )
    response = client.post(f"/api/datasets/{dataset.pk}/items/", payload)
    assert response.status_code < 500, response.content
    return response


def stored(item: Item) -> tuple[str, np.ndarray]:
    with item.image.open("rb") as fh, Image.open(io.BytesIO(fh.read())) as img:
        return f"{img.format}/{img.mode}", np.asarray(img).copy()


def files_under_items(media: Path) -> list[str]:
    folder = media / "items"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_a_good_png_is_stored_with_its_pixels_and_label(staff, dataset, media):
    response = upload(
        staff,
        dataset,
        encode(Image.fromarray(GOOD), "PNG"),
        "cat.png",
        label_index="2",
        label_name="camel",
    )
    assert response.status_code == 201
    body = response.json()
    assert (body["name"], body["width"], body["height"]) == ("cat.png", 12, 10)
    assert (body["label_index"], body["label_name"], body["source"]) == (2, "camel", "upload by co")
    item = Item.objects.get(pk=body["id"])
    kind, pixels = stored(item)
    assert kind == "PNG/RGB"
    np.testing.assert_array_equal(pixels, GOOD)


def test_a_cmyk_jpeg_is_stored_as_rgb_with_its_colours(staff, dataset, media):
    response = upload(staff, dataset, cmyk_jpeg(), "print.jpg")
    assert response.status_code == 201
    assert response.json()["original_mode"] == "CMYK"
    kind, pixels = stored(Item.objects.get())
    assert kind == "PNG/RGB" and pixels.shape == (8, 8, 3)
    np.testing.assert_allclose(pixels[4, 1], [255, 0, 0], atol=30)  # red half
    np.testing.assert_allclose(pixels[4, 6], [0, 0, 255], atol=30)  # blue half


def test_a_palette_png_with_transparency_has_white_where_it_was_transparent(staff, dataset, media):
    response = upload(staff, dataset, palette_png_with_transparency(), "icon.png")
    assert response.status_code == 201
    assert response.json()["original_mode"] == "P"
    kind, pixels = stored(Item.objects.get())
    assert kind == "PNG/RGB"
    assert (pixels[0] == [255, 255, 255]).all()  # transparent red became white, not red
    assert (pixels[1:] == [0, 200, 0]).all()


def test_the_content_not_the_file_name_decides_the_format(staff, dataset, media):
    response = upload(staff, dataset, encode(Image.fromarray(GOOD), "PNG"), "photo.txt")
    assert response.status_code == 201
    assert response.json()["name"] == "photo.txt"
    _, pixels = stored(Item.objects.get(name="photo.txt"))
    np.testing.assert_array_equal(pixels, GOOD)


@pytest.mark.parametrize(
    ("case", "data", "expected_in_detail"),
    [
        ("truncated JPEG", encode(Image.fromarray(GOOD), "JPEG")[:300], "truncated"),
        ("not an image", b"hello, I am text\n" * 10, "not a recognised image"),
        ("PNG signature only", b"\x89PNG\r\n\x1a\n", ""),
    ],
)
def test_undecodable_uploads_are_400_with_the_file_named(
    staff, dataset, media, case, data, expected_in_detail
):
    response = upload(staff, dataset, data, "broken.jpg")
    assert response.status_code == 400, case
    detail = response.json()["detail"]
    assert detail.startswith("broken.jpg: ") and expected_in_detail in detail
    assert dataset.items.count() == 0 and files_under_items(media) == []


def test_a_zero_byte_file_is_400(staff, dataset, media):
    response = upload(staff, dataset, b"", "empty.png")
    assert response.status_code == 400
    assert "empty" in str(response.json()["file"]).lower()
    assert dataset.items.count() == 0


def test_a_missing_file_field_is_400(staff, dataset, media):
    response = upload(staff, dataset, None, name="nothing.png")
    assert response.status_code == 400
    assert "file" in response.json()
    assert dataset.items.count() == 0


@pytest.fixture
def load_spy(monkeypatch) -> list[tuple[int, int]]:
    """Records the size of every image Pillow fully decodes (allocates) from here on."""
    loaded: list[tuple[int, int]] = []
    real_load = ImageFile.ImageFile.load

    def spy(self):
        loaded.append(self.size)
        return real_load(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", spy)
    return loaded


def test_a_decompression_bomb_is_refused_from_its_header(staff, dataset, media, load_spy):
    bomb = png_header_only(20_000, 20_000)
    assert len(bomb) < 200  # 1.2 GB of pixels claimed by a few bytes
    response = upload(staff, dataset, bomb, "bomb.png")
    assert response.status_code == 400
    detail = response.json()["detail"]
    assert detail.startswith("bomb.png: ")
    assert "400000000 pixels" in detail or "20000x20000" in detail
    assert "limit" in detail
    assert load_spy == []  # never decoded
    assert dataset.items.count() == 0 and files_under_items(media) == []


def test_a_decompression_bomb_detail_names_its_dimensions_and_the_configured_limit(
    staff, dataset, media, settings
):
    settings.STUDYPLATFORM_MAX_IMAGE_PIXELS = 40_000_000
    detail = upload(staff, dataset, png_header_only(20_000, 20_000), "bomb.png").json()["detail"]
    assert "20000x20000" in detail and "40000000" in detail


def test_an_image_over_the_configured_pixel_limit_names_size_and_limit(
    staff, dataset, media, settings, load_spy
):
    settings.STUDYPLATFORM_MAX_IMAGE_PIXELS = 100
    response = upload(staff, dataset, encode(Image.fromarray(GOOD), "PNG"), "big.png")
    assert response.status_code == 400
    assert response.json()["detail"] == "big.png: 12x10 pixels exceeds the limit of 100"
    assert load_spy == []
    # and a header-only 8000x8000 (64 MP: over 40 MP, under Pillow's own refusal)
    settings.STUDYPLATFORM_MAX_IMAGE_PIXELS = 40_000_000
    response = upload(staff, dataset, png_header_only(8000, 8000), "wide.png")
    assert response.json()["detail"] == "wide.png: 8000x8000 pixels exceeds the limit of 40000000"
    assert load_spy == []


def test_the_same_image_or_the_same_name_twice_is_409(staff, dataset, media):
    png = encode(Image.fromarray(GOOD), "PNG")
    assert upload(staff, dataset, png, "a.png").status_code == 201
    again = upload(staff, dataset, png, "a.png")
    assert again.status_code == 409 and "already in the dataset" in again.json()["detail"]
    renamed = upload(staff, dataset, png, "b.png")  # same content, other name
    assert renamed.status_code == 409
    other = encode(Image.fromarray(255 - GOOD), "PNG")
    assert upload(staff, dataset, other, "a.png").status_code == 409  # same name, other content
    assert list(dataset.items.values_list("name", flat=True)) == ["a.png"]
    assert len(files_under_items(media)) == 1


def test_an_upload_over_the_byte_limit_is_413_before_decoding(
    staff, dataset, media, settings, load_spy
):
    png = encode(Image.fromarray(GOOD), "PNG")
    settings.STUDYPLATFORM_MAX_UPLOAD_BYTES = len(png) - 1
    response = upload(staff, dataset, png, "heavy.png")
    assert response.status_code == 413
    assert response.json()["detail"] == (
        f"heavy.png: {len(png)} bytes exceeds the limit of {len(png) - 1}"
    )
    assert load_spy == [] and dataset.items.count() == 0
    settings.STUDYPLATFORM_MAX_UPLOAD_BYTES = len(png)  # exactly at the limit is fine
    assert upload(staff, dataset, png, "heavy.png").status_code == 201


def test_an_unknown_dataset_is_404(staff, db):
    assert (
        upload(staff, Dataset(pk=987654), encode(Image.fromarray(GOOD), "PNG")).status_code == 404
    )


def test_after_a_mix_of_good_and_bad_uploads_exactly_the_good_ones_are_stored(
    staff, dataset, media, settings
):
    good_png = encode(Image.fromarray(GOOD), "PNG")
    sequence = [
        ("good.png", good_png, 201),
        ("truncated.jpg", encode(Image.fromarray(GOOD), "JPEG")[:200], 400),
        ("empty.png", b"", 400),
        ("print.jpg", cmyk_jpeg(), 201),
        ("bomb.png", png_header_only(20_000, 20_000), 400),
        ("icon.png", palette_png_with_transparency(), 201),
        ("copy.png", good_png, 409),
        ("photo.txt", encode(Image.fromarray(GOOD[::-1]), "PNG"), 201),
        ("good.png", encode(Image.fromarray(GOOD[:, ::-1]), "PNG"), 409),
        (None, None, 400),
    ]
    statuses = []
    for name, data, _ in sequence:
        response = upload(staff, dataset, data, name or "x.png", **({} if name else {"name": "x"}))
        statuses.append(response.status_code)
    settings.STUDYPLATFORM_MAX_UPLOAD_BYTES = 10
    statuses.append(upload(staff, dataset, good_png[::-1] + b"!", "huge.png").status_code)

    assert statuses == [s for *_, s in sequence] + [413]
    items = list(dataset.items.order_by("id"))
    assert [i.name for i in items] == ["good.png", "print.jpg", "icon.png", "photo.txt"]
    assert Item.objects.count() == 4
    assert files_under_items(media) == sorted(Path(i.image.name).name for i in items)
    for item in items:
        kind, pixels = stored(item)
        assert kind == "PNG/RGB" and pixels.shape == (item.height, item.width, 3)

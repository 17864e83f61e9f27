"""image_decode and center_square_resize on real files written with Pillow.

Every photo enters the platform through ``image_decode``; these tests pin down what it does with
damaged files, transparency, grayscale and 16-bit scans, palettes and EXIF orientation, and what
``center_square_resize`` (the model's and the participant's view) crops.
"""

from __future__ import annotations

import hashlib
import io
import os
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from explanations.imageio import (
    DecodedImage,
    ImageDecodeError,
    center_square_resize,
    encode_png,
    image_decode,
)


def encode(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def noise_rgb(height: int = 64, width: int = 48, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


# --- damaged and unacceptable files -------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_file_is_rejected_as_truncated_or_corrupt_naming_the_file(fmt):
    data = encode(Image.fromarray(noise_rgb()), fmt)
    with pytest.raises(ImageDecodeError) as info:
        image_decode(data[: len(data) // 2], name=f"holiday.{fmt.lower()}")
    message = str(info.value)
    assert message.startswith(f"holiday.{fmt.lower()}: ")
    assert "truncated or corrupt" in message


def test_the_complete_file_of_a_truncated_one_decodes():
    """Control for the truncation test: the same bytes, uncut, are fine."""
    pixels = noise_rgb()
    decoded = image_decode(encode(Image.fromarray(pixels), "PNG"), name="full.png")
    np.testing.assert_array_equal(decoded.pixels, pixels)


def test_empty_bytes_are_rejected_naming_the_file():
    with pytest.raises(ImageDecodeError, match=r"^empty\.png: the file is empty$"):
        image_decode(b"", name="empty.png")


def test_random_bytes_are_not_a_recognised_image_format():
    data = np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    with pytest.raises(ImageDecodeError, match=r"^noise\.bin: not a recognised image format$"):
        image_decode(data, name="noise.bin")


def test_png_signature_followed_by_garbage_is_rejected():
    data = b"\x89PNG\r\n\x1a\n" + os.urandom(200)
    with pytest.raises(ImageDecodeError, match=r"^fake\.png: "):
        image_decode(data, name="fake.png")


def test_image_above_max_pixels_is_refused_with_its_size():
    data = encode(Image.fromarray(noise_rgb(height=30, width=40)), "PNG")
    with pytest.raises(ImageDecodeError) as info:
        image_decode(data, name="big.png", max_pixels=1199)
    assert str(info.value) == "big.png: 40x30 pixels exceeds the limit of 1199"


def test_image_at_exactly_max_pixels_is_accepted():
    data = encode(Image.fromarray(noise_rgb(height=30, width=40)), "PNG")
    assert image_decode(data, name="ok.png", max_pixels=1200).pixels.shape == (30, 40, 3)


def png_header_only(width: int, height: int) -> bytes:
    """A PNG claiming width x height 8-bit grayscale pixels, with almost no image data: what a
    decompression bomb looks like to Image.open (which reads only the header)."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 16))
        + chunk(b"IEND", b"")
    )


def test_decompression_bomb_above_pillows_warning_threshold_is_refused_by_its_size():
    """90 MP is above Pillow's DecompressionBombWarning threshold (89.5 MP). Regression: the
    warning was turned into an error and reported as "truncated or corrupt"."""
    with pytest.raises(ImageDecodeError) as info:
        image_decode(png_header_only(10_000, 9_000), name="bomb.png", max_pixels=40_000_000)
    assert str(info.value) == "bomb.png: 10000x9000 pixels exceeds the limit of 40000000"


def test_decompression_bomb_above_twice_pillows_limit_is_reported_by_our_limit():
    """Pillow's own open-time refusal (> 179 MP) is lifted for the header read, so the message
    names the dimensions and the configured limit, and nothing is decoded."""
    with pytest.raises(ImageDecodeError) as info:
        image_decode(png_header_only(20_000, 10_000), name="bomb.png")
    assert str(info.value) == "bomb.png: 20000x10000 pixels exceeds the limit of 40000000"


def test_pillows_bomb_limit_is_restored_after_a_decode():
    from PIL import Image

    before = Image.MAX_IMAGE_PIXELS
    with pytest.raises(ImageDecodeError):
        image_decode(png_header_only(20_000, 10_000), name="bomb.png")
    assert Image.MAX_IMAGE_PIXELS == before and before is not None


def test_max_pixels_above_pillows_warning_threshold_is_honoured():
    """With max_pixels = 100 MP a 90 MP image passes the size check and is decoded; this one
    then fails only because its pixel data are missing. Regression: Pillow's 89.5 MP warning
    threshold overrode the configured limit."""
    with pytest.raises(ImageDecodeError) as info:
        image_decode(png_header_only(10_000, 9_000), name="scan.png", max_pixels=100_000_000)
    message = str(info.value)
    assert message.startswith("scan.png: cannot decode image: truncated or corrupt (image file")
    assert "decompression bomb" not in message


def test_error_is_a_value_error_so_form_validation_can_catch_it():
    assert issubclass(ImageDecodeError, ValueError)


# --- modes ---------------------------------------------------------------------------------------


def test_rgb_png_round_trips_exactly_and_records_sha256_of_the_file_bytes():
    pixels = noise_rgb(5, 7)
    data = encode(Image.fromarray(pixels), "PNG")
    decoded = image_decode(data)
    assert isinstance(decoded, DecodedImage)
    assert decoded.pixels.dtype == np.uint8
    np.testing.assert_array_equal(decoded.pixels, pixels)
    assert (decoded.width, decoded.height) == (7, 5)
    assert decoded.original_mode == "RGB"
    assert decoded.sha256 == hashlib.sha256(data).hexdigest()


def test_rgba_png_is_composited_on_white():
    """out = src * a + white * (1 - a) per channel, a = alpha / 255.

    (0, 0, 0, 0)       -> fully transparent -> white (255, 255, 255)
    (255, 0, 0, 128)   -> R: 255;  G, B: 255 * (1 - 128/255) = 127
    (0, 0, 255, 255)   -> opaque, unchanged
    (0, 0, 0, 255)     -> opaque black stays black (not confused with transparent)
    """
    rgba = np.array(
        [[[0, 0, 0, 0], [255, 0, 0, 128], [0, 0, 255, 255], [0, 0, 0, 255]]], dtype=np.uint8
    )
    decoded = image_decode(encode(Image.fromarray(rgba, mode="RGBA"), "PNG"), name="alpha.png")
    assert decoded.original_mode == "RGBA"
    assert decoded.pixels.shape == (1, 4, 3)
    assert decoded.pixels.tolist() == [[[255, 255, 255], [255, 127, 127], [0, 0, 255], [0, 0, 0]]]


def test_grayscale_alpha_png_is_composited_on_white():
    la = Image.new("LA", (2, 1))
    la.putpixel((0, 0), (0, 0))  # transparent black -> white
    la.putpixel((1, 0), (100, 255))  # opaque gray 100
    decoded = image_decode(encode(la, "PNG"))
    assert decoded.original_mode == "LA"
    assert decoded.pixels.tolist() == [[[255, 255, 255], [100, 100, 100]]]


def test_grayscale_png_is_expanded_to_three_equal_channels():
    gray = (np.arange(12, dtype=np.uint8) * 20).reshape(3, 4)
    decoded = image_decode(encode(Image.fromarray(gray, mode="L"), "PNG"))
    assert decoded.original_mode == "L"
    assert decoded.pixels.shape == (3, 4, 3)
    for channel in range(3):
        np.testing.assert_array_equal(decoded.pixels[..., channel], gray)


def test_sixteen_bit_png_is_rescaled_min_to_0_and_max_to_255():
    """(v - min) / (max - min) * 255, rounded: 0 -> 0, 1000 -> 3.89 -> 4,
    30000 -> 116.73 -> 117, 65535 -> 255."""
    values = np.array([[0, 1000], [30000, 65535]], dtype=np.uint16)
    data = encode(Image.fromarray(values), "PNG")
    assert Image.open(io.BytesIO(data)).mode == "I;16"  # the file really is 16-bit
    decoded = image_decode(data)
    assert decoded.original_mode == "I;16"
    assert decoded.pixels[..., 0].tolist() == [[0, 4], [117, 255]]
    np.testing.assert_array_equal(decoded.pixels[..., 0], decoded.pixels[..., 2])


def test_sixteen_bit_png_with_a_narrow_range_is_stretched_to_full_range():
    """1000..5000 -> (v - 1000) / 4000 * 255: 0, 63.75 -> 64, 127.5 -> 128, 255."""
    values = np.array([[1000, 2000], [3000, 5000]], dtype=np.uint16)
    decoded = image_decode(encode(Image.fromarray(values), "PNG"))
    assert decoded.pixels[..., 1].tolist() == [[0, 64], [128, 255]]


def test_constant_sixteen_bit_png_becomes_black_not_nan():
    values = np.full((2, 3), 4242, dtype=np.uint16)
    decoded = image_decode(encode(Image.fromarray(values), "PNG"))
    assert decoded.pixels.tolist() == [[[0, 0, 0]] * 3] * 2


def test_palette_png_with_transparency_is_composited_on_white():
    palette = [0, 0, 255, 10, 200, 30] + [0] * (256 * 3 - 6)
    img = Image.new("P", (3, 1))
    img.putpalette(palette)
    for x, index in enumerate([0, 1, 0]):
        img.putpixel((x, 0), index)
    data = encode(img, "PNG", transparency=0)  # palette entry 0 (blue) is transparent
    decoded = image_decode(data)
    assert decoded.original_mode == "P"
    assert decoded.pixels.tolist() == [[[255, 255, 255], [10, 200, 30], [255, 255, 255]]]


def test_palette_png_without_transparency_keeps_its_colours():
    img = Image.new("P", (2, 1))
    img.putpalette([0, 0, 255, 10, 200, 30] + [0] * (256 * 3 - 6))
    img.putpixel((0, 0), 0)
    img.putpixel((1, 0), 1)
    decoded = image_decode(encode(img, "PNG"))
    assert decoded.pixels.tolist() == [[[0, 0, 255], [10, 200, 30]]]


def test_exif_orientation_6_jpeg_is_rotated_upright():
    """Orientation 6 = "rotate 90 degrees clockwise to display": a 48x32 (W x H) stored image
    comes out 32x48, and the red block stored at the top-left ends up at the top-right."""
    stored = np.zeros((32, 48, 3), dtype=np.uint8)
    stored[:16, :16] = (255, 0, 0)
    img = Image.fromarray(stored)
    exif = img.getexif()
    exif[0x0112] = 6
    decoded = image_decode(encode(img, "JPEG", exif=exif.tobytes(), quality=95), name="phone.jpg")
    assert decoded.pixels.shape == (48, 32, 3)
    assert (decoded.width, decoded.height) == (32, 48)
    red = decoded.pixels[..., 0] > 128
    assert red[:16, 16:].all()  # top-right quadrant (after rotation)
    assert not red[:, :16].any()  # nothing red on the left
    assert not red[16:, :].any()  # nothing red below


def test_jpeg_without_exif_keeps_its_shape():
    decoded = image_decode(encode(Image.fromarray(noise_rgb(32, 48)), "JPEG"))
    assert decoded.pixels.shape == (32, 48, 3)
    assert decoded.original_mode == "RGB"


def test_decoded_pixels_are_a_writable_copy():
    decoded = image_decode(encode(Image.fromarray(np.full((4, 4, 3), 9, np.uint8)), "PNG"))
    assert decoded.pixels.flags.writeable
    decoded.pixels[0, 0] = 0  # would raise "assignment destination is read-only" on a PIL view
    assert decoded.pixels[0, 0].tolist() == [0, 0, 0]
    assert decoded.pixels[0, 1].tolist() == [9, 9, 9]


def test_encode_png_round_trips_through_image_decode():
    pixels = noise_rgb(9, 11, seed=3)
    np.testing.assert_array_equal(image_decode(encode_png(pixels)).pixels, pixels)


# --- center_square_resize ------------------------------------------------------------------------


def test_center_square_of_a_wide_image_at_the_same_size_is_the_central_columns():
    pixels = np.arange(2 * 4 * 3, dtype=np.uint8).reshape(2, 4, 3)
    out = center_square_resize(pixels, 2)
    assert out.shape == (2, 2, 3)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, pixels[:, 1:3])


def test_center_square_of_a_tall_image_at_the_same_size_is_the_central_rows():
    pixels = np.arange(6 * 2 * 3, dtype=np.uint8).reshape(6, 2, 3)
    np.testing.assert_array_equal(center_square_resize(pixels, 2), pixels[2:4])


def test_center_square_with_odd_margin_rounds_the_offset_down():
    """Width 5, height 2: margin 3, left = 3 // 2 = 1 -> columns 1 and 2."""
    pixels = np.arange(2 * 5 * 3, dtype=np.uint8).reshape(2, 5, 3)
    np.testing.assert_array_equal(center_square_resize(pixels, 2), pixels[:, 1:3])


def test_margins_outside_the_central_square_do_not_leak_into_the_resized_view():
    """Central 10x10 square is uniform 50, the margins are 255: after bicubic resizing (up or
    down) every output pixel is exactly 50."""
    pixels = np.full((10, 30, 3), 255, dtype=np.uint8)
    pixels[:, 10:20] = 50
    for size in (3, 7, 10, 24):
        out = center_square_resize(pixels, size)
        assert out.shape == (size, size, 3)
        assert (out == 50).all(), size


def test_square_image_at_the_same_size_is_unchanged():
    pixels = noise_rgb(8, 8)
    np.testing.assert_array_equal(center_square_resize(pixels, 8), pixels)


@pytest.mark.parametrize(
    "pixels",
    [
        np.zeros((4, 4), dtype=np.uint8),
        np.zeros((4, 4, 4), dtype=np.uint8),
        np.zeros((4, 4, 3), dtype=np.float32),
    ],
    ids=["2d", "rgba", "float"],
)
def test_center_square_resize_rejects_anything_but_hw3_uint8(pixels):
    with pytest.raises(ValueError, match="expected \\(H, W, 3\\) uint8"):
        center_square_resize(pixels, 2)


@pytest.mark.parametrize("size", [0, -1])
def test_center_square_resize_rejects_a_non_positive_size(size):
    with pytest.raises(ValueError, match="size must be positive"):
        center_square_resize(np.zeros((4, 4, 3), dtype=np.uint8), size)

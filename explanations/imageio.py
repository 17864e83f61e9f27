"""The one place where images are decoded, oriented, converted and bounded.

Every photo that enters the platform passes through :func:`image_decode`, so a corrupt file, an
RGBA or palette PNG, a 16-bit or grayscale scan and a decompression bomb are all handled the same
way wherever they arrive from.
"""

from __future__ import annotations

import hashlib
import io
import threading
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

_PILLOW_LIMIT_LOCK = threading.Lock()


def _open_without_pillow_limit(data: bytes) -> Image.Image:
    """``Image.open`` (header only) with Pillow's own bomb limit lifted for this call.

    Pillow refuses headers over 2 x ``Image.MAX_IMAGE_PIXELS`` inside ``open``, before we can
    apply our configured ``max_pixels`` and report the dimensions; nothing is decoded here,
    and the caller checks the size before ``load()``.
    """
    with _PILLOW_LIMIT_LOCK:
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            return Image.open(io.BytesIO(data))
        finally:
            Image.MAX_IMAGE_PIXELS = saved


class ImageDecodeError(ValueError):
    """The bytes are not a complete, decodable image of acceptable size."""


@dataclass(frozen=True)
class DecodedImage:
    """A decoded photo ready for storage and for models.

    Attributes:
        pixels: (H, W, 3) uint8 RGB array, EXIF orientation applied, transparency composited
            on white.
        original_mode: the PIL mode the file had (``"RGBA"``, ``"L"``, ``"P"``, ...).
        sha256: hex SHA-256 of the original file bytes (duplicate detection).
    """

    pixels: np.ndarray
    original_mode: str
    sha256: str

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])


def image_decode(data: bytes, *, name: str = "image", max_pixels: int = 40_000_000) -> DecodedImage:
    """Decode image file bytes into an RGB uint8 array.

    Args:
        data: the raw file contents (PNG, JPEG, WebP, TIFF, ... anything Pillow reads).
        name: shown in error messages so the researcher knows which file failed.
        max_pixels: refuse images with more pixels than this before decoding them fully.

    Returns:
        A :class:`DecodedImage` whose ``pixels`` is (H, W, 3) uint8.

    Raises:
        ImageDecodeError: empty, unrecognised, truncated or corrupt data, or too many pixels.
    """
    if not data:
        raise ImageDecodeError(f"{name}: the file is empty")
    digest = hashlib.sha256(data).hexdigest()
    try:
        with warnings.catch_warnings():
            # The max_pixels check below replaces Pillow's warning threshold (89 MP), so a
            # limit configured above it is honoured and a bomb is reported by its size.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with _open_without_pillow_limit(data) as img:
                width, height = img.size
                if width * height > max_pixels:
                    raise ImageDecodeError(
                        f"{name}: {width}x{height} pixels exceeds the limit of {max_pixels}"
                    )
                img.load()  # forces a full decode: truncated files fail here, not later
                mode = img.mode
                img = ImageOps.exif_transpose(img)
                rgb = _to_rgb(img)
    except ImageDecodeError:
        raise
    except UnidentifiedImageError:
        raise ImageDecodeError(f"{name}: not a recognised image format") from None
    except Image.DecompressionBombError as exc:  # over twice Pillow's limit: open() refuses
        raise ImageDecodeError(f"{name}: image too large ({exc})") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageDecodeError(
            f"{name}: cannot decode image: truncated or corrupt ({exc})"
        ) from None
    pixels = np.asarray(rgb, dtype=np.uint8)
    if pixels.ndim != 3 or pixels.shape[2] != 3 or min(pixels.shape[:2]) < 1:
        raise ImageDecodeError(f"{name}: decoded to an unexpected shape {pixels.shape}")
    return DecodedImage(pixels=pixels.copy(), original_mode=mode, sha256=digest)


def _to_rgb(img: Image.Image) -> Image.Image:
    """Convert any PIL mode to RGB; transparent pixels become white, 16-bit is rescaled."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        scaled = np.zeros_like(arr) if hi <= lo else (arr - lo) / (hi - lo) * 255.0
        img = Image.fromarray(scaled.round().astype(np.uint8), mode="L")
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "PA"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def center_square_resize(pixels: np.ndarray, size: int) -> np.ndarray:
    """Crop the central square of a photo and resize it to ``size`` x ``size``.

    This is what the model sees and what participants are shown, so heatmaps align with the
    displayed photo pixel for pixel.

    Args:
        pixels: (H, W, 3) uint8.
        size: output side length in pixels (224 for EfficientNet-Lite0).

    Returns:
        (size, size, 3) uint8.

    Raises:
        ValueError: ``pixels`` is not (H, W, 3) uint8 or ``size`` < 1.
    """
    if pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.dtype != np.uint8:
        raise ValueError(f"expected (H, W, 3) uint8, got {pixels.shape} {pixels.dtype}")
    if size < 1:
        raise ValueError(f"size must be positive, got {size}")
    height, width = pixels.shape[:2]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    square = Image.fromarray(pixels[top : top + side, left : left + side])
    return np.asarray(square.resize((size, size), Image.Resampling.BICUBIC), dtype=np.uint8)


def resize_to_square(pixels: np.ndarray, size: int) -> np.ndarray:
    """Resize a whole (H, W, 3) uint8 photo to ``size`` x ``size`` (bicubic; aspect ratio not
    kept), for models trained on squashed images.

    Raises:
        ValueError: ``pixels`` is not (H, W, 3) uint8 or ``size`` < 1.
    """
    if pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.dtype != np.uint8:
        raise ValueError(f"expected (H, W, 3) uint8, got {pixels.shape} {pixels.dtype}")
    if size < 1:
        raise ValueError(f"size must be positive, got {size}")
    image = Image.fromarray(pixels).resize((size, size), Image.Resampling.BICUBIC)
    return np.asarray(image, dtype=np.uint8)


def encode_png(pixels: np.ndarray) -> bytes:
    """Encode an (H, W, 3) or (H, W) uint8 array as PNG bytes."""
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG", optimize=False)
    return buf.getvalue()

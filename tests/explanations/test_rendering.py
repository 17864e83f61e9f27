"""Saliency normalisation, colour overlay and PNG encoding on literal arrays."""

from __future__ import annotations

import io

import matplotlib
import numpy as np
import pytest
from PIL import Image

from explanations.rendering import normalize_each, normalize_jointly, overlay, to_png_bytes

# Three 2x2 maps: peaks 4, 0 (all zero) and 3; global peak 4.
MAPS = np.array(
    [
        [[0.0, 2.0], [1.0, 4.0]],
        [[0.0, 0.0], [0.0, 0.0]],
        [[3.0, 0.0], [1.5, 0.0]],
    ]
)


def test_normalize_each_divides_every_map_by_its_own_max_and_keeps_zero_map_zero() -> None:
    result = normalize_each(MAPS)

    expected = np.array(
        [
            [[0.0, 0.5], [0.25, 1.0]],  # / 4
            [[0.0, 0.0], [0.0, 0.0]],  # all zero stays zero
            [[1.0, 0.0], [0.5, 0.0]],  # / 3
        ],
        dtype=np.float32,
    )
    assert result.dtype == np.float32
    np.testing.assert_array_equal(result, expected)


def test_normalize_jointly_divides_all_maps_by_the_global_max() -> None:
    result = normalize_jointly(MAPS)

    expected = np.array(
        [
            [[0.0, 0.5], [0.25, 1.0]],  # / 4
            [[0.0, 0.0], [0.0, 0.0]],
            [[0.75, 0.0], [0.375, 0.0]],  # / 4, so this weaker map stays below 1
        ],
        dtype=np.float32,
    )
    assert result.dtype == np.float32
    np.testing.assert_array_equal(result, expected)


def test_normalize_jointly_keeps_all_zero_maps_zero() -> None:
    np.testing.assert_array_equal(normalize_jointly(np.zeros((2, 3, 3))), np.zeros((2, 3, 3)))


@pytest.mark.parametrize("normalize", [normalize_each, normalize_jointly])
def test_normalizers_do_not_modify_their_input(normalize) -> None:
    maps = MAPS.copy()

    normalize(maps)

    np.testing.assert_array_equal(maps, MAPS)


@pytest.mark.parametrize("normalize", [normalize_each, normalize_jointly])
def test_normalizers_reject_negative_values_instead_of_clipping(normalize) -> None:
    signed = np.array([[[0.5, -0.25], [1.0, 0.0]]])

    with pytest.raises(ValueError, match=r"non-negative \(min is -0\.25\).*np\.clip"):
        normalize(signed)


@pytest.mark.parametrize("normalize", [normalize_each, normalize_jointly])
@pytest.mark.parametrize(
    ("maps", "message"),
    [
        (np.ones((2, 2)), r"shape \(T, H, W\)"),
        (np.ones((0, 2, 2)), r"empty"),
        (np.array([[[np.nan, 1.0]]]), r"NaN"),
        (np.array([[[np.inf, 1.0]]]), r"infinite"),
    ],
    ids=["2d", "empty", "nan", "inf"],
)
def test_normalizers_reject_malformed_maps(normalize, maps: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        normalize(maps)


# 1x2 photo: an orange-ish pixel and a blue-ish pixel.
PHOTO = np.array([[[200, 100, 0], [10, 20, 250]]], dtype=np.uint8)


def test_overlay_blends_colormap_over_photo_with_exact_alpha_arithmetic() -> None:
    # jet(0) = (0, 0, 0.5) -> (0, 0, 127.5); jet(1) = (0.5, 0, 0) -> (127.5, 0, 0).
    saliency = np.array([[0.0, 1.0]])

    result = overlay(PHOTO, saliency, alpha=0.25, cmap="jet")

    # pixel 0: 0.75*(200, 100, 0) + 0.25*(0, 0, 127.5)    = (150, 75, 31.875)    -> (150, 75, 32)
    # pixel 1: 0.75*(10, 20, 250) + 0.25*(127.5, 0, 0)    = (39.375, 15, 187.5)  -> (39, 15, 188)
    expected = np.array([[[150, 75, 32], [39, 15, 188]]], dtype=np.uint8)
    assert result.dtype == np.uint8
    np.testing.assert_array_equal(result, expected)


def test_overlay_uses_matplotlib_colormap_colour_for_intermediate_values() -> None:
    saliency = np.array([[0.5, 0.5]])
    colour = np.array(matplotlib.colormaps["viridis"](0.5)[:3]) * 255

    result = overlay(PHOTO, saliency, alpha=0.5, cmap="viridis")

    expected = np.rint(0.5 * PHOTO.astype(np.float64) + 0.5 * colour).astype(np.uint8)
    np.testing.assert_array_equal(result, expected)


def test_overlay_alpha_zero_returns_photo_and_alpha_one_returns_heatmap() -> None:
    saliency = np.array([[0.0, 1.0]])

    np.testing.assert_array_equal(overlay(PHOTO, saliency, alpha=0.0), PHOTO)
    # jet(0) * 255 = (0, 0, 127.5) -> 128 (round half to even); jet(1) * 255 = (127.5, 0, 0)
    np.testing.assert_array_equal(
        overlay(PHOTO, saliency, alpha=1.0), np.array([[[0, 0, 128], [128, 0, 0]]], np.uint8)
    )


@pytest.mark.parametrize(
    ("image", "saliency", "kwargs", "message"),
    [
        (PHOTO, np.zeros((2, 1)), {}, r"saliency shape \(2, 1\) does not match .* \(1, 2\)"),
        (PHOTO, np.array([[0.0, 1.5]]), {}, r"\[0, 1\].*\[0, 1\.5\]"),
        (PHOTO, np.array([[-0.1, 1.0]]), {}, r"\[0, 1\].*\[-0\.1, 1\]"),
        (PHOTO, np.array([[np.nan, 1.0]]), {}, r"\[0, 1\].*NaN"),
        (PHOTO, np.array([[0, 1]]), {}, r"floating point.*int"),
        (PHOTO.astype(np.float32), np.zeros((1, 2)), {}, r"uint8 array of shape \(H, W, 3\)"),
        (PHOTO[..., 0], np.zeros((1, 2)), {}, r"uint8 array of shape \(H, W, 3\)"),
        (PHOTO, np.zeros((1, 2)), {"alpha": 1.5}, r"alpha must lie in \[0, 1\], got 1\.5"),
        (PHOTO, np.zeros((1, 2)), {"cmap": "no-such-map"}, r"unknown matplotlib colormap"),
    ],
    ids=[
        "shape-mismatch",
        "above-one",
        "negative",
        "nan",
        "integer-saliency",
        "float-image",
        "grey-image",
        "alpha",
        "cmap",
    ],
)
def test_overlay_rejects_invalid_arguments(
    image: np.ndarray, saliency: np.ndarray, kwargs: dict, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        overlay(image, saliency, **kwargs)


@pytest.mark.parametrize(
    "image",
    [
        np.array([[[255, 0, 0], [0, 255, 0]], [[0, 0, 255], [7, 8, 9]]], dtype=np.uint8),
        np.array([[0, 128, 255]], dtype=np.uint8),
    ],
    ids=["rgb", "grey"],
)
def test_to_png_bytes_round_trips_exactly(image: np.ndarray) -> None:
    data = to_png_bytes(image)

    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(data))), image)


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (np.zeros((2, 2, 3), dtype=np.float32), r"dtype uint8"),
        (np.zeros((2, 2, 4), dtype=np.uint8), r"shape \(H, W, 3\) or \(H, W\)"),
        (np.zeros((0, 2), dtype=np.uint8), r"empty"),
    ],
    ids=["float", "rgba", "empty"],
)
def test_to_png_bytes_rejects_invalid_images(image: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        to_png_bytes(image)

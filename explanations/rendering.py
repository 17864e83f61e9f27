"""Turn non-negative saliency maps into images shown to study participants.

Two normalisations are offered because HIVE's tasks need different comparisons (Kim, Meister,
Ramaswamy, Fong and Russakovsky, "HIVE: Evaluating the Human Interpretability of Visual
Explanations", ECCV 2022, supplementary material):

* :func:`normalize_each` scales every map to its own maximum (each heatmap uses the full colour
  range; intensities are *not* comparable between maps);
* :func:`normalize_jointly` divides all maps of one image by a single global maximum, so that
  intensities *are* comparable across the maps, as the distinction task requires.

Negative values: these are heatmap normalisers for non-negative maps (Grad-CAM's output is
``>= 0`` by construction).  Rather than silently clipping signed attributions, which would hide
negative evidence, both functions raise ``ValueError`` when a map contains a value ``< 0``; a
caller with signed maps must decide explicitly (``np.clip(maps, 0, None)`` or ``np.abs(maps)``).

Pure NumPy + matplotlib colormaps + Pillow; no torch, no Django.
"""

from __future__ import annotations

import io

import matplotlib
import numpy as np
from PIL import Image

__all__ = [
    "normalize_each",
    "normalize_jointly",
    "overlay",
    "overlays",
    "panel_png",
    "to_png_bytes",
]

#: Colour map of non-negative maps (0 = blue ... max = red) and of signed maps (negative =
#: blue, 0 = white, positive = red, symmetric around 0).
SEQUENTIAL_CMAP = "jet"
DIVERGING_CMAP = "bwr"


def _check_maps(maps: np.ndarray) -> np.ndarray:
    array = np.asarray(maps)
    if array.ndim != 3:
        raise ValueError(f"maps must have shape (T, H, W), got {array.shape}")
    if array.size == 0:
        raise ValueError(f"maps must not be empty, got shape {array.shape}")
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise ValueError(f"maps must be real numbers, got dtype {array.dtype}")
    array = array.astype(np.float32)
    if not np.all(np.isfinite(array)):
        raise ValueError("maps contain NaN or infinite values")
    minimum = float(array.min())
    if minimum < 0:
        raise ValueError(
            f"maps must be non-negative (min is {minimum:g}); clip (np.clip(maps, 0, None)) or "
            "take np.abs(maps) explicitly before normalising signed attributions"
        )
    return array


def normalize_each(maps: np.ndarray) -> np.ndarray:
    """Scale every map to ``[0, 1]`` by its own maximum.

    Args:
        maps: real array of shape ``(T, H, W)``, finite, all values ``>= 0``.

    Returns:
        New ``float32`` array of shape ``(T, H, W)`` in ``[0, 1]``; ``out[i] = maps[i] /
        maps[i].max()``, so every non-zero map reaches exactly ``1``.  An all-zero map stays
        all zero.

    Raises:
        ValueError: wrong number of dimensions, empty, non-real dtype, NaN/inf, or a negative
            value.
    """
    array = _check_maps(maps)
    peaks = array.max(axis=(1, 2), keepdims=True)
    safe = np.where(peaks > 0, peaks, np.float32(1))
    return (array / safe).astype(np.float32)


def normalize_jointly(maps: np.ndarray) -> np.ndarray:
    """Scale all maps to ``[0, 1]`` by one global maximum, preserving relative intensities.

    Used where participants compare heatmaps of different classes for the same image (HIVE
    distinction task, Kim et al., ECCV 2022, supplement): a weak map stays visibly weaker.

    Args:
        maps: real array of shape ``(T, H, W)``, finite, all values ``>= 0``.

    Returns:
        New ``float32`` array of shape ``(T, H, W)`` in ``[0, 1]``; ``out = maps / maps.max()``.
        If every value is zero the result is all zero.

    Raises:
        ValueError: wrong number of dimensions, empty, non-real dtype, NaN/inf, or a negative
            value.
    """
    array = _check_maps(maps)
    peak = float(array.max())
    if peak == 0:
        return np.zeros_like(array, dtype=np.float32)
    return (array / np.float32(peak)).astype(np.float32)


def overlay(
    image: np.ndarray, saliency: np.ndarray, *, alpha: float = 0.5, cmap: str = "jet"
) -> np.ndarray:
    """Alpha-blend a colour-mapped saliency map over a photo.

    Per pixel and channel: ``out = round((1 - alpha) * image + alpha * 255 * rgb)``, where
    ``rgb`` in ``[0, 1]`` is ``matplotlib.colormaps[cmap](saliency)[..., :3]`` (the colormap's
    alpha channel is ignored).  Rounding is to the nearest integer, halves to even (``np.rint``).

    Args:
        image: ``uint8`` array of shape ``(H, W, 3)`` (RGB).
        saliency: floating-point array of shape ``(H, W)`` with values in ``[0, 1]`` (e.g. one
            slice of :func:`normalize_each` / :func:`normalize_jointly`).
        alpha: weight of the heatmap, ``0 <= alpha <= 1`` (``0``: the photo unchanged, ``1``:
            the heatmap only).
        cmap: name of a registered matplotlib colormap.

    Returns:
        New ``uint8`` array of shape ``(H, W, 3)``.

    Raises:
        ValueError: wrong image dtype/shape, saliency not floating point, shape mismatch,
            NaN or values outside ``[0, 1]``, ``alpha`` outside ``[0, 1]``, or unknown ``cmap``.
    """
    image = np.asarray(image)
    saliency = np.asarray(saliency)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(
            f"image must be a uint8 array of shape (H, W, 3), got {image.dtype} {image.shape}"
        )
    if not np.issubdtype(saliency.dtype, np.floating):
        raise ValueError(f"saliency must be floating point in [0, 1], got dtype {saliency.dtype}")
    if saliency.shape != image.shape[:2]:
        raise ValueError(
            f"saliency shape {saliency.shape} does not match image shape {image.shape[:2]}"
        )
    if not np.all((saliency >= 0) & (saliency <= 1)):  # also rejects NaN
        raise ValueError(
            "saliency values must lie in [0, 1] (normalise first); got range "
            f"[{np.nanmin(saliency):g}, {np.nanmax(saliency):g}]"
            + (" with NaN" if np.isnan(saliency).any() else "")
        )
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha!r}")
    try:
        colormap = matplotlib.colormaps[cmap]
    except KeyError as exc:
        raise ValueError(f"unknown matplotlib colormap {cmap!r}") from exc
    rgb = colormap(saliency.astype(np.float64))[..., :3] * 255.0
    blended = (1.0 - alpha) * image.astype(np.float64) + alpha * rgb
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)


def to_png_bytes(image: np.ndarray, *, compress_level: int = 6) -> bytes:
    """Encode an image as PNG.

    Args:
        image: ``uint8`` array of shape ``(H, W, 3)`` (RGB) or ``(H, W)`` (greyscale).
        compress_level: zlib level 0-9 (Pillow's default 6; 1 is ~4x faster and ~30% larger,
            what explanation jobs use for their researcher-page overlays).

    Returns:
        The PNG file contents; decoding them gives back exactly ``image``.

    Raises:
        ValueError: wrong dtype or shape, or zero height/width.
    """
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"image must have dtype uint8, got {image.dtype}")
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)):
        raise ValueError(f"image must have shape (H, W, 3) or (H, W), got {image.shape}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"image must not be empty, got shape {image.shape}")
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(
        buffer, format="PNG", compress_level=compress_level
    )
    return buffer.getvalue()


def overlays(
    image: np.ndarray,
    maps: np.ndarray,
    *,
    joint: bool = False,
    alpha: float = 0.5,
    clip_percentile: float | None = None,
    stretch: bool = False,
) -> list[np.ndarray]:
    """Colour-mapped overlays of ``T`` maps of one image, choosing the display by sign.

    Non-negative maps (Grad-CAM, RISE, saliency magnitudes) are normalised by
    :func:`normalize_each` (or :func:`normalize_jointly` when ``joint``) and shown with the
    sequential map :data:`SEQUENTIAL_CMAP`. Signed maps (Integrated Gradients, guided
    backpropagation, occlusion, LIME) keep their sign: each is divided by its maximum absolute
    value (or one value for all when ``joint``), mapped from ``[-1, 1]`` to ``[0, 1]`` and shown
    with the diverging map :data:`DIVERGING_CMAP`, white at 0.

    Args:
        image: ``uint8`` ``(H, W, 3)``.
        maps: real ``(T, H, W)``, finite.
        joint: one normalisation for all maps (intensities comparable across them).
        alpha: heatmap weight in ``[0, 1]``.
        clip_percentile: scale by the ``100 - clip_percentile`` percentile of the absolute
            values instead of the maximum, and clip above it (e.g. 1.0: the top 1 % saturate),
            so that a few extreme pixels do not wash out pixel-level maps (Captum's
            visualisation does the same with ``outlier_perc=2``). None: the maximum.
        stretch: for non-negative maps, subtract each map's minimum first (RISE-like maps sit
            on a large constant offset).

    Returns:
        ``T`` new ``uint8`` ``(H, W, 3)`` arrays.

    Raises:
        ValueError: as :func:`overlay`; NaN/inf or a wrong shape in ``maps``.
    """
    array = np.asarray(maps, dtype=np.float32)
    if array.ndim != 3 or not np.all(np.isfinite(array)):
        raise ValueError(f"maps must be finite with shape (T, H, W), got {array.shape}")
    signed = float(array.min()) < 0
    if not signed and stretch:
        array = array - array.min(axis=(1, 2), keepdims=True)
    if not signed and clip_percentile is None:
        scaled = normalize_jointly(array) if joint else normalize_each(array)
        return [overlay(image, m, alpha=alpha, cmap=SEQUENTIAL_CMAP) for m in scaled]
    magnitude = np.abs(array)
    q = 100.0 - (clip_percentile or 0.0)
    if joint:
        peaks = np.full((len(array), 1, 1), float(np.percentile(magnitude, q)), np.float32)
    else:
        peaks = np.percentile(magnitude, q, axis=(1, 2)).astype(np.float32)[:, None, None]
    if not signed:
        safe = np.where(peaks > 0, peaks, np.float32(1))
        scaled = np.clip(array / safe, 0.0, 1.0).astype(np.float32)
        return [overlay(image, m, alpha=alpha, cmap=SEQUENTIAL_CMAP) for m in scaled]
    safe = np.where(peaks > 0, peaks, np.float32(1))
    centred = np.clip((array / safe + 1.0) / 2.0, 0.0, 1.0).astype(np.float32)
    return [overlay(image, m, alpha=alpha, cmap=DIVERGING_CMAP) for m in centred]


def panel_png(rows: list[tuple[str, list[tuple[str, np.ndarray]]]], *, title: str = "") -> bytes:
    """Side-by-side panel: one row per image, one column per (caption, RGB image).

    Args:
        rows: ``[(row label, [(column caption, uint8 (H, W, 3)), ...]), ...]``; rows may have
            different lengths.
        title: figure title.

    Returns:
        PNG bytes (matplotlib, Agg backend).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n_cols = max(len(cells) for _, cells in rows)
    fig = Figure(figsize=(1.9 * n_cols, 2.0 * len(rows) + 0.4))
    FigureCanvasAgg(fig)  # no pyplot: thread-safe in web and worker processes
    axes = fig.subplots(len(rows), n_cols, squeeze=False)
    for r, (label, cells) in enumerate(rows):
        for c in range(n_cols):
            ax = axes[r][c]
            ax.axis("off")
            if c < len(cells):
                caption, picture = cells[c]
                ax.imshow(picture)
                ax.set_title(caption if r == 0 or c == 0 else "", fontsize=8)
        axes[r][0].text(
            -0.08,
            0.5,
            label,
            transform=axes[r][0].transAxes,
            rotation=90,
            va="center",
            ha="right",
            fontsize=8,
        )
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return buf.getvalue()


#: Smallest side, in pixels, of the pictures of prototype and concept stimuli: small model
#: views (28 px Fashion-MNIST) are enlarged by an integer factor with nearest-neighbour
#: sampling so their pixels stay sharp.
PROTOTYPE_PICTURE_MIN = 112
BOX_COLOUR = (255, 214, 0)  # a yellow that reads on grey, photos and the heatmap colours


def _enlarge(picture: np.ndarray, minimum: int = PROTOTYPE_PICTURE_MIN) -> tuple[np.ndarray, int]:
    scale = max(1, -(-minimum // max(1, min(picture.shape[:2]))))  # ceil
    if scale == 1:
        return picture, 1
    return np.repeat(np.repeat(picture, scale, axis=0), scale, axis=1), scale


def boxed_picture(
    image: np.ndarray, box, *, minimum: int = PROTOTYPE_PICTURE_MIN, width: int = 2
) -> np.ndarray:
    """``image`` enlarged to at least ``minimum`` pixels a side with a yellow rectangle.

    Args:
        image: uint8 ``(H, W, 3)``.
        box: ``(x0, y0, x1, y1)`` in ``image`` pixels, end-exclusive (a receptive-field box
            of :mod:`explanations.prototypes`), or None for no rectangle.

    Returns:
        uint8 ``(H * s, W * s, 3)`` with ``s = ceil(minimum / min(H, W))`` (at least 1).
    """
    from PIL import Image, ImageDraw

    big, scale = _enlarge(np.asarray(image, dtype=np.uint8))
    if box is None:
        return big
    x0, y0, x1, y1 = (int(v) for v in box)
    picture = Image.fromarray(big)
    ImageDraw.Draw(picture).rectangle(
        [x0 * scale, y0 * scale, x1 * scale - 1, y1 * scale - 1], outline=BOX_COLOUR, width=width
    )
    return np.asarray(picture)


def activation_picture(image: np.ndarray, cells, box=None) -> np.ndarray:
    """A prototype's activation over ``image`` ("this part"), as in Chen et al., NeurIPS 2019.

    Args:
        image: uint8 ``(H, W, 3)``, the model's view of the test image.
        cells: real ``(h, w)`` similarities at the latent resolution, >= 0.
        box: the most activated cell's receptive field ``(x0, y0, x1, y1)``, drawn in yellow.

    Returns:
        uint8 ``(H * s, W * s, 3)``: the map bilinearly upsampled to ``(H, W)``, each map
        normalised by its own maximum, over the image; enlarged as :func:`boxed_picture`.
    """
    from PIL import Image

    h, w = image.shape[:2]
    small = np.asarray(cells, dtype=np.float32)
    up = np.asarray(Image.fromarray(small, mode="F").resize((w, h), Image.BILINEAR))
    shown = overlays(image, np.clip(up, 0, None)[None])[0]
    return boxed_picture(shown, box)


def box_crop(image: np.ndarray, box, size: int) -> np.ndarray:
    """The ``(x0, y0, x1, y1)`` box of ``image`` (clipped to it), resized to ``size`` square
    with nearest-neighbour sampling: a prototype's patch for the similarity rating."""
    from PIL import Image

    h, w = image.shape[:2]
    x0, y0, x1, y1 = (int(v) for v in box)
    x0, y0 = max(0, min(x0, w - 1)), max(0, min(y0, h - 1))
    x1, y1 = max(x0 + 1, min(x1, w)), max(y0 + 1, min(y1, h))
    crop = np.ascontiguousarray(image[y0:y1, x0:x1])
    return np.asarray(Image.fromarray(crop).resize((size, size), Image.NEAREST))

"""Tests for analysis.plots (pure Python, no Django)."""

from __future__ import annotations

import io

import matplotlib
import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import LineCollection
from matplotlib.colors import to_hex
from matplotlib.patches import Rectangle
from PIL import Image

from analysis.plots import OKABE_ITO, accuracy_figure, accuracy_plot_png
from analysis.stats import accuracy_table

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _table() -> pd.DataFrame:
    rows = (
        [("agreement", "model right", c, 0.5) for c in (1, 1, 1, 1, 1, 0)]
        + [("agreement", "model wrong", c, 0.5) for c in (1, 0, 0, 0)]
        + [("distinction", "model right", c, 0.25) for c in (1, 1, 0, 1)]
        + [("distinction", "model wrong", c, 0.25) for c in (0, 0, 0)]
    )
    df = pd.DataFrame(rows, columns=["task", "model_correct", "is_correct", "chance"])
    return accuracy_table(df, by=["task", "model_correct"])


def _decode(png: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(png))
    image.load()
    return image


def _bars(fig) -> list[Rectangle]:
    (ax,) = fig.axes
    return [p for p in ax.patches if isinstance(p, Rectangle)]


def _chance_lines(ax) -> list[LineCollection]:
    return [c for c in ax.collections if isinstance(c, LineCollection) and c.get_gid() == "chance"]


def test_png_signature_and_decodes() -> None:
    png = accuracy_plot_png(_table(), group_col="task", hue_col="model_correct", title="HIVE")
    assert isinstance(png, bytes)
    assert png.startswith(PNG_SIGNATURE)
    image = _decode(png)
    assert image.format == "PNG"
    assert image.width > 300
    assert image.height > 200
    # Not blank: the bars put real colour in the image.
    pixels = np.asarray(image.convert("RGB"))
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 10


def test_bar_heights_are_accuracies() -> None:
    table = _table()
    fig = accuracy_figure(table, group_col="task", hue_col="model_correct")
    heights = sorted(round(bar.get_height(), 12) for bar in _bars(fig))
    assert heights == sorted(round(a, 12) for a in table["accuracy"])
    assert heights == sorted([round(5 / 6, 12), 0.25, 0.75, 0.0])


def test_colour_blind_safe_colours_per_hue() -> None:
    fig = accuracy_figure(_table(), group_col="task", hue_col="model_correct")
    colours = {to_hex(bar.get_facecolor()).upper() for bar in _bars(fig)}
    assert colours == {OKABE_ITO[0].upper(), OKABE_ITO[1].upper()}


def test_axis_labels_limits_and_title() -> None:
    fig = accuracy_figure(_table(), group_col="task", hue_col="model_correct", title="HIVE")
    (ax,) = fig.axes
    assert ax.get_ylabel() == "Accuracy"
    assert ax.get_ylim() == (0.0, 1.0)
    assert ax.get_title() == "HIVE"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["agreement", "distinction"]
    legend_texts = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend_texts == ["model right", "model wrong", "chance"]


def test_n_annotated_on_each_bar() -> None:
    fig = accuracy_figure(_table(), group_col="task", hue_col="model_correct")
    (ax,) = fig.axes
    labels = sorted(t.get_text() for t in ax.texts if t.get_text().startswith("n="))
    assert labels == ["n=3", "n=4", "n=4", "n=6"]


def test_dashed_chance_line_per_group() -> None:
    fig = accuracy_figure(_table(), group_col="task", hue_col="model_correct")
    (ax,) = fig.axes
    chance = _chance_lines(ax)
    levels = sorted(seg[0][1] for c in chance for seg in c.get_segments())
    assert levels == [0.25, 0.5]
    for c in chance:
        (style,) = c.get_linestyles()
        assert style[1] is not None  # a dash pattern, not a solid line


def test_chance_differing_within_group_draws_per_bar() -> None:
    table = _table()
    table.loc[table.index[0], "chance"] = 1 / 3
    fig = accuracy_figure(table, group_col="task", hue_col="model_correct")
    (ax,) = fig.axes
    chance = _chance_lines(ax)
    levels = sorted(round(seg[0][1], 6) for c in chance for seg in c.get_segments())
    assert levels == [0.25, round(1 / 3, 6), 0.5]


def test_error_bars_span_wilson_interval() -> None:
    table = _table()
    fig = accuracy_figure(table, group_col="task", hue_col="model_correct")
    (ax,) = fig.axes
    spans = []
    for c in ax.collections:
        if isinstance(c, LineCollection) and c.get_gid() != "chance":
            for seg in c.get_segments():
                (x0, y0), (x1, y1) = seg[0], seg[-1]
                if x0 == x1:
                    spans.append((round(min(y0, y1), 9), round(max(y0, y1), 9)))
    expected = [
        (round(lo, 9), round(hi, 9)) for lo, hi in zip(table.ci_low, table.ci_high, strict=True)
    ]
    assert sorted(spans) == sorted(expected)


def test_empty_table_png() -> None:
    empty = _table().iloc[:0]
    png = accuracy_plot_png(empty, group_col="task", hue_col="model_correct")
    assert png.startswith(PNG_SIGNATURE)
    assert _decode(png).width > 300
    fig = accuracy_figure(empty, group_col="task", hue_col="model_correct")
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert texts == ["no responses yet"]


def test_empty_dataframe_without_columns_png() -> None:
    png = accuracy_plot_png(pd.DataFrame(), group_col="task", hue_col="model_correct")
    assert png.startswith(PNG_SIGNATURE)


def test_missing_columns_raise() -> None:
    with pytest.raises(ValueError, match=r"missing required column.*'ci_low'"):
        accuracy_plot_png(
            _table().drop(columns=["ci_low"]), group_col="task", hue_col="model_correct"
        )
    with pytest.raises(ValueError, match=r"missing required column.*'condition'"):
        accuracy_plot_png(_table(), group_col="task", hue_col="condition")


def test_duplicate_rows_raise() -> None:
    table = _table()
    with pytest.raises(ValueError, match="one row per"):
        accuracy_plot_png(
            pd.concat([table, table.iloc[:1]]), group_col="task", hue_col="model_correct"
        )


def test_single_hue_and_bool_hue_values() -> None:
    table = _table()
    table["model_correct"] = table["model_correct"] == "model right"
    png = accuracy_plot_png(table, group_col="task", hue_col="model_correct")
    assert _decode(png).width > 300
    one = table[table["model_correct"]]
    assert _decode(accuracy_plot_png(one, group_col="task", hue_col="model_correct")).width > 300


def test_does_not_touch_global_backend() -> None:
    before = matplotlib.get_backend()
    accuracy_plot_png(_table(), group_col="task", hue_col="model_correct")
    assert matplotlib.get_backend() == before

"""Figures for study results, rendered to PNG bytes (no Django imports).

Figures are built with :class:`matplotlib.figure.Figure` and the Agg canvas directly, never with
``matplotlib.pyplot``: pyplot keeps global state and selects a GUI backend, neither of which is
safe in a multi-threaded web server. Nothing here changes matplotlib's global backend.

Colours are the Okabe & Ito (2008) colour-blind-safe palette, with hatching as a second cue
for greyscale printing.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.transforms import blended_transform_factory

__all__ = ["OKABE_ITO", "accuracy_figure", "accuracy_plot_png"]

#: Okabe & Ito (2008) colour-blind-safe palette, most contrasting pair first.
OKABE_ITO: tuple[str, ...] = (
    "#0072B2",  # blue
    "#E69F00",  # orange
    "#009E73",  # bluish green
    "#CC79A7",  # reddish purple
    "#56B4E9",  # sky blue
    "#D55E00",  # vermillion
    "#F0E442",  # yellow
    "#000000",  # black
)
_HATCHES: tuple[str, ...] = ("", "//", "..", "xx", "\\\\", "++", "oo", "--")
_CHANCE_COLOUR = "#555555"
_EMPTY_MESSAGE = "no responses yet"
_DPI = 100


def _unique_in_order(values: Sequence[object]) -> list[object]:
    """Distinct values in order of first appearance (NaN counted once)."""
    seen: list[object] = []
    for value in values:
        if not any(_same(value, other) for other in seen):
            seen.append(value)
    return seen


def _same(a: object, b: object) -> bool:
    """Equality that treats two missing values as equal."""
    if pd.isna(a) and pd.isna(b):  # type: ignore[arg-type]
        return True
    return bool(a == b)


def _empty_figure(title: str) -> Figure:
    fig = Figure(figsize=(6.4, 4.0), dpi=_DPI)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.set_axis_off()
    ax.text(
        0.5,
        0.5,
        _EMPTY_MESSAGE,
        ha="center",
        va="center",
        fontsize=14,
        color="#333333",
        transform=ax.transAxes,
    )
    if title:
        ax.set_title(title)
    return fig


def accuracy_figure(
    table: pd.DataFrame, *, group_col: str, hue_col: str, title: str = ""
) -> Figure:
    """Grouped bar chart of accuracy, as a :class:`~matplotlib.figure.Figure` (no pyplot).

    See :func:`accuracy_plot_png` for the meaning of the arguments. Bars for a group (e.g. a
    task) sit side by side, one per ``hue_col`` value (e.g. "model right" / "model wrong"), in
    order of first appearance in ``table``. Each bar carries a Wilson 95% error bar from
    ``ci_low``/``ci_high``, an ``n=...`` label just below the axis, and each group has a dashed
    chance line across its bars (per bar if the chance level differs between its bars).

    Raises:
        ValueError: ``table`` has rows but lacks one of the required columns, or has more than
            one row for the same (group, hue) pair.
    """
    if len(table.index) == 0:
        return _empty_figure(title)

    required = [group_col, hue_col, "accuracy", "ci_low", "ci_high", "n", "chance"]
    missing = [col for col in dict.fromkeys(required) if col not in table.columns]
    if missing:
        raise ValueError(
            f"accuracy plot: missing required column(s) {missing!r}; "
            f"available columns: {list(map(str, table.columns))!r}"
        )
    if table.duplicated(subset=[group_col, hue_col]).any():
        raise ValueError(
            f"accuracy plot: table must have one row per ({group_col!r}, {hue_col!r}) pair"
        )

    groups = _unique_in_order(table[group_col].tolist())
    hues = _unique_in_order(table[hue_col].tolist())
    n_hues = len(hues)
    bar_width = 0.8 / n_hues

    width_in = max(6.4, 3.0 + 0.55 * len(groups) * max(n_hues, 2))
    fig = Figure(figsize=(width_in, 4.8), dpi=_DPI)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    below_axis = blended_transform_factory(ax.transData, ax.transAxes)

    for h_idx, hue in enumerate(hues):
        colour = OKABE_ITO[h_idx % len(OKABE_ITO)]
        hatch = _HATCHES[h_idx % len(_HATCHES)]
        labelled = False
        for g_idx, group in enumerate(groups):
            rows = table[
                table[group_col].map(lambda v, g=group: _same(v, g))
                & table[hue_col].map(lambda v, h=hue: _same(v, h))
            ]
            if len(rows.index) == 0:
                continue
            row = rows.iloc[0]
            x = g_idx - 0.4 + bar_width * (h_idx + 0.5)
            accuracy = float(row["accuracy"])
            height = 0.0 if math.isnan(accuracy) else accuracy
            ax.bar(
                x,
                height,
                width=bar_width * 0.95,
                color=colour,
                hatch=hatch,
                edgecolor="white" if not hatch else "#222222",
                linewidth=0.6,
                label=None if labelled else str(hue),
                zorder=2,
            )
            labelled = True
            low, high = float(row["ci_low"]), float(row["ci_high"])
            if not (math.isnan(accuracy) or math.isnan(low) or math.isnan(high)):
                ax.errorbar(
                    x,
                    accuracy,
                    yerr=[[max(accuracy - low, 0.0)], [max(high - accuracy, 0.0)]],
                    fmt="none",
                    ecolor="#222222",
                    elinewidth=1.2,
                    capsize=4,
                    zorder=3,
                )
            ax.text(
                x,
                -0.015,
                f"n={int(row['n'])}",
                transform=below_axis,
                ha="center",
                va="top",
                fontsize=8,
                color="#222222",
            )

    chance_handles: list[object] = []
    for g_idx, group in enumerate(groups):
        rows = table[table[group_col].map(lambda v, g=group: _same(v, g))]
        chances = rows["chance"].astype(float).dropna().unique()
        if len(chances) == 0:
            continue
        if len(chances) == 1:
            segments = [(g_idx - 0.45, g_idx + 0.45, float(chances[0]))]
        else:
            segments = []
            for _, row in rows.iterrows():
                h_idx = next(i for i, h in enumerate(hues) if _same(row[hue_col], h))
                x = g_idx - 0.4 + bar_width * (h_idx + 0.5)
                segments.append((x - bar_width / 2, x + bar_width / 2, float(row["chance"])))
        for x0, x1, level in segments:
            if math.isnan(level):
                continue
            line = ax.hlines(
                level,
                x0,
                x1,
                colors=_CHANCE_COLOUR,
                linestyles="dashed",
                linewidth=1.5,
                label=None if chance_handles else "chance",
                zorder=4,
            )
            line.set_gid("chance")
            chance_handles.append(line)

    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels([str(g) for g in groups])
    ax.tick_params(axis="x", length=0, pad=18)
    ax.set_xlim(-0.6, len(groups) - 0.4)
    ax.set_ylim(0.0, 1.0)
    ax.set_yticks([0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
    ax.set_ylabel("Accuracy")
    ax.set_xlabel(str(group_col))
    ax.grid(axis="y", color="#dddddd", linewidth=0.8, zorder=0)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    handles, labels = ax.get_legend_handles_labels()
    # Hue entries first, the chance line last.
    order = sorted(range(len(handles)), key=lambda i: handles[i] in chance_handles[:1])
    ax.legend(
        [handles[i] for i in order],
        [labels[i] for i in order],
        title=str(hue_col),
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        frameon=False,
    )
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def accuracy_plot_png(
    table: pd.DataFrame, *, group_col: str, hue_col: str, title: str = ""
) -> bytes:
    """Render a grouped bar chart of accuracy to PNG bytes.

    Args:
        table: an accuracy table as returned by
            :func:`analysis.stats.accuracy_table` with ``by=[group_col, hue_col]``: one row per
            (group, hue) pair with columns ``group_col``, ``hue_col``, ``accuracy`` (in [0, 1]),
            ``ci_low``, ``ci_high`` (Wilson 95% interval, Wilson 1927 / Newcombe 1998 method 3),
            ``n`` (responses) and ``chance`` (chance level in [0, 1]). Extra columns are ignored.
            An empty table yields a PNG that says "no responses yet".
        group_col: column whose values form the x-axis groups (e.g. ``"task"``).
        hue_col: column whose values form the bars within a group and the legend (e.g.
            ``"model_correct"`` mapped to "model right" / "model wrong").
        title: optional figure title.

    Returns:
        PNG image bytes (starting with ``b"\\x89PNG\\r\\n\\x1a\\n"``), at least 640 px wide. The
        y axis spans 0..1 and is labelled "Accuracy"; chance levels are dashed lines; each bar
        is annotated with its ``n``; colours are the Okabe-Ito colour-blind-safe palette.

    Raises:
        ValueError: a non-empty ``table`` lacks a required column (named in the message) or has
            duplicate (group, hue) rows.
    """
    fig = accuracy_figure(table, group_col=group_col, hue_col=hue_col, title=title)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=_DPI, metadata={"Software": None})
    return buffer.getvalue()


def distribution_plot_png(
    groups: dict[str, Sequence[float]], *, title: str, xlabel: str, log: bool = False
) -> bytes:
    """Box plots (median, quartiles, 1.5 IQR whiskers) of one distribution per group,
    horizontal, to PNG bytes; e.g. response times per condition in ms. Groups with no values
    are left out; all empty gives a PNG that says "no responses yet".

    Args:
        groups: label -> numbers; None, NaN and infinities are dropped.
        log: logarithmic value axis (response times are right-skewed).
    """
    data = {
        k: [float(v) for v in vs if v is not None and math.isfinite(float(v))]
        for k, vs in groups.items()
    }
    data = {k: v for k, v in data.items() if v}
    if not data:
        fig = _empty_figure(title)
    else:
        fig = Figure(figsize=(8, 0.6 * len(data) + 1.6))
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        box = ax.boxplot(
            list(data.values()), orientation="horizontal", patch_artist=True, widths=0.6
        )
        for patch, colour in zip(box["boxes"], OKABE_ITO * 4, strict=False):
            patch.set_facecolor(colour)
            patch.set_alpha(0.55)
        ax.set_yticks(range(1, len(data) + 1), [f"{k} (n={len(v)})" for k, v in data.items()])
        if log:
            ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_title(title)
        ax.grid(axis="x", color="#dddddd", linewidth=0.8)
        ax.set_axisbelow(True)
        fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=_DPI, metadata={"Software": None})
    return buffer.getvalue()

"""Report figures written straight to PNG.

Figures are built with ``matplotlib.figure.Figure`` rather than pyplot, so no global backend or
figure registry is touched; ``savefig`` renders through Agg and the figure is freed with its last
reference.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from promptcl.metrics.continual import AccuracyMatrix, lower_triangle

DPI = 120


def _save(fig: Figure, path: str | os.PathLike[str]) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)


def plot_heatmap(
    matrix: Sequence[Sequence[float | None]],
    path: str | os.PathLike[str],
    *,
    row_label: str,
    col_label: str,
    title: str = "",
    fmt: str = ".0f",
    row_names: Sequence[str] | None = None,
    col_names: Sequence[str] | None = None,
    vmin: float | None = None,
    vmax: float | None = None,
    cbar_label: str = "",
) -> None:
    """Annotated heatmap of a rectangular matrix; ``None`` cells are left blank.

    Cell size and font size scale with the matrix so that ~20 x 20 stays readable. Rows and
    columns are labelled ``0..n-1`` unless ``row_names`` / ``col_names`` are given.
    """
    n_rows = len(matrix)
    n_cols = len(matrix[0]) if n_rows else 0
    if n_rows == 0 or n_cols == 0:
        raise ValueError("heatmap matrix is empty")
    if any(len(row) != n_cols for row in matrix):
        raise ValueError(f"heatmap matrix is ragged: expected {n_cols} columns in every row")
    mask = np.array([[v is None for v in row] for row in matrix])
    data = np.ma.masked_array(
        [[np.nan if v is None else float(v) for v in row] for row in matrix], mask=mask
    )

    n = max(n_rows, n_cols)
    cell = 0.55 if n <= 10 else 0.45
    fontsize = max(5.0, min(10.0, 110.0 / n))
    fig = Figure(
        figsize=(max(4.0, cell * n_cols + 2.2), max(3.5, cell * n_rows + 1.6)), layout="constrained"
    )
    ax = fig.add_subplot()
    im = ax.imshow(data, cmap="viridis", vmin=vmin, vmax=vmax, aspect="equal")
    cbar = fig.colorbar(im, ax=ax, shrink=0.9)
    if cbar_label:
        cbar.set_label(cbar_label)

    lo, hi = im.norm.vmin, im.norm.vmax
    for (i, j), value in np.ndenumerate(data.filled(np.nan)):
        if mask[i, j]:
            continue
        dark = hi == lo or (value - lo) / (hi - lo) < 0.5  # viridis is dark at the low end
        ax.text(
            j,
            i,
            format(value, fmt),
            ha="center",
            va="center",
            fontsize=fontsize,
            color="white" if dark else "black",
        )

    ax.set_xticks(range(n_cols), col_names if col_names is not None else range(n_cols))
    ax.set_yticks(range(n_rows), row_names if row_names is not None else range(n_rows))
    ax.tick_params(labelsize=fontsize)
    ax.set_xlabel(col_label)
    ax.set_ylabel(row_label)
    if title:
        ax.set_title(title)
    _save(fig, path)


def plot_accuracy_matrix(
    acc: AccuracyMatrix, path: str | os.PathLike[str], title: str = ""
) -> None:
    """Heatmap of ``acc[i][j]`` (accuracy on task ``j`` after training task ``i``), 0-100 scale.

    Only the lower triangle is drawn; tasks are labelled 1-based on both axes.
    """
    rows = lower_triangle(acc)
    t = len(rows)
    square = [row + [None] * (t - len(row)) for row in rows]
    names = [str(k + 1) for k in range(t)]
    plot_heatmap(
        square,
        path,
        row_label="after training task",
        col_label="evaluated on task",
        title=title,
        fmt=".1f",
        row_names=names,
        col_names=names,
        vmin=0.0,
        vmax=100.0,
        cbar_label="accuracy (%)",
    )


def plot_average_accuracy(
    curves: Mapping[str, Sequence[float]], path: str | os.PathLike[str], title: str = ""
) -> None:
    """Average accuracy after each task (x = tasks seen, 1-based), one marked line per label."""
    steps = range(1, max((len(v) for v in curves.values()), default=0) + 1)
    plot_lines(curves, steps, path, "tasks seen", "average accuracy (%)", title)


def plot_lines(
    curves: Mapping[str, Sequence[float]],
    x: Sequence[float],
    path: str | os.PathLike[str],
    xlabel: str,
    ylabel: str,
    title: str = "",
) -> None:
    """One marked line per label over the integer positions ``x`` (a curve may be shorter)."""
    if not curves:
        raise ValueError("no curves to plot")
    fig = Figure(figsize=(6.0, 4.0), layout="constrained")
    ax = fig.add_subplot()
    for label, values in curves.items():
        ax.plot(list(x)[: len(values)], values, marker="o", markersize=4, label=label)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend()
    if title:
        ax.set_title(title)
    _save(fig, path)


def plot_bars(
    values: Mapping[str, float | None],
    path: str | os.PathLike[str],
    title: str = "",
    ylabel: str = "accuracy (%)",
) -> None:
    """One annotated bar per label (base / novel / HM of a base-to-novel run); None is skipped."""
    shown = {k: float(v) for k, v in values.items() if v is not None}
    if not shown:
        raise ValueError("no values to plot")
    fig = Figure(figsize=(max(3.5, 1.1 * len(shown) + 1.5), 3.8), layout="constrained")
    ax = fig.add_subplot()
    bars = ax.bar(list(shown), list(shown.values()), color="tab:blue")
    ax.bar_label(bars, fmt="%.1f", padding=2)
    ax.set_ylim(0, max(100.0, max(shown.values()) * 1.1))
    ax.set_ylabel(ylabel)
    ax.grid(axis="y", alpha=0.3)
    if title:
        ax.set_title(title)
    _save(fig, path)

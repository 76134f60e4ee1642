"""The report's figures, drawn with matplotlib's object API onto the Agg canvas (no display, no pyplot state).

Each function takes small, already prepared DataFrames (pipeline/analysis/report.py prepares them), writes one PNG
and returns nothing. `note` is a line printed under the plot, e.g. which points are not shown and why. Point labels
never overlap each other or the points (`place_labels`).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.text import Text
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter
from matplotlib.transforms import Bbox

DPI = 110
_OK, _FRONT, _OTHER = "#2b6cb0", "#c53030", "#a0aec0"


def _figure(width: float, height: float, ncols: int = 1, nrows: int = 1, **kwargs):
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots(nrows, ncols, squeeze=False, **kwargs)


def _width(n: int) -> float:
    """Wide enough for n category labels, within what a page shows."""
    return float(min(22, max(6.5, 0.7 * n + 2.5)))


def _save(fig: Figure, path: Path, note: str | None) -> None:
    _note(fig, note)
    fig.savefig(path, dpi=DPI)


def _note(fig: Figure, note: str | None) -> None:
    if note:
        fig.supxlabel(note, fontsize=8, color="#555555", x=0.01, ha="left")


def _categories(ax, labels: list[str]) -> None:
    crowded = max(map(len, labels)) * len(labels) > 60  # the labels would overlap if written flat
    ax.set_xticks(range(len(labels)), labels, rotation=30 if crowded else 0, ha="right" if crowded else "center")
    ax.set_xlim(-0.6, len(labels) - 0.4)


def latency_throughput(points: pd.DataFrame, xlabel: str, path: Path, note: str | None = None) -> None:
    """Median latency (p90 and p99 whiskers) and throughput per point.

    points: label, median, p90, p99 (ms), throughput (samples/s), in display order.
    """
    labels = list(points["label"])
    x = np.arange(len(points))
    fig, axes = _figure(2 * _width(len(points)) / 1.4, 4.2, ncols=2)
    lat, thr = axes[0]
    lat.errorbar(x, points["median"], yerr=[np.zeros(len(x)), (points["p99"] - points["median"]).clip(lower=0)],
                 fmt="o", color=_OK, ecolor="black", markersize=8, capsize=7, lw=1.2, zorder=3,
                 label="median, whisker to p99")
    lat.scatter(x, points["p90"], marker="_", s=300, color="#dd6b20", linewidths=2.5, zorder=4, label="p90")
    # one slow outlier per hundred iterations would otherwise flatten every median into the axis
    _latency_axis(lat, points[["median", "p99"]].to_numpy(), "latency per batch (ms)")
    lat.set_title("Latency: median, p90, p99")
    lat.legend(fontsize=8, loc="upper left", ncols=2)
    thr.bar(x, points["throughput"], color="#38a169", alpha=0.85)
    thr.set_ylabel("throughput (samples/s)")
    thr.set_title("Throughput")
    for ax in (lat, thr):
        _categories(ax, labels)
        ax.set_xlabel(xlabel)
        ax.grid(axis="y", alpha=0.3)
    thr.set_ylim(0, float(points["throughput"].max()) * 1.1 if points["throughput"].notna().any() else 1)
    _save(fig, path, note)


def _latency_axis(ax, values: np.ndarray, label: str) -> None:
    """Log scale when the values span more than a decade (a linear axis would hide the small ones), labelled
    in plain milliseconds; headroom on top for the legend."""
    values = values[np.isfinite(values) & (values > 0)]
    if not len(values):
        return
    lo, hi = float(values.min()), float(values.max())
    wide = hi / lo > 10
    if wide:
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_ylim(lo / 1.5, hi * 3)
    else:
        ax.set_ylim(0, hi * 1.25)
    ax.set_ylabel(label + (", log scale" if wide else ""))


def pareto_mask(latency: np.ndarray, error: np.ndarray, noise_pct: np.ndarray | None = None) -> np.ndarray:
    """True where no other point is at least as good on both axes and strictly better on one (lower is better).

    `noise_pct`: per point, how far apart two latencies may lie by chance (percent; the larger of a pair counts):
    latencies closer than that are a tie, so a point is never left off the front by a difference within the noise."""
    lat, err = np.asarray(latency, float), np.asarray(error, float)
    noise = np.zeros(len(lat)) if noise_pct is None else np.nan_to_num(np.asarray(noise_pct, float))
    tie = np.maximum(noise[None, :], noise[:, None]) / 100 * lat[:, None]  # [i, j]: within the noise of i's latency
    no_worse = (lat[None, :] <= lat[:, None] + tie) & (err[None, :] <= err[:, None])
    better = (lat[None, :] < lat[:, None] - tie) | (err[None, :] < err[:, None])
    return ~(no_worse & better).any(axis=1)


def accuracy_latency(points: pd.DataFrame, error_label: str, path: Path, note: str | None = None) -> None:
    """Error against median latency, one labelled point per run, the Pareto front marked and joined.

    points: label, median (ms), error (lower is better); optional `selected` (the build to ship: a star) and
    `noise` (percent: latencies closer than that are not told apart).
    """
    accuracy_latency_figure(points, error_label, note).savefig(path, dpi=DPI)


def accuracy_latency_figure(points: pd.DataFrame, error_label: str, note: str | None = None) -> Figure:
    """accuracy_latency's figure, its labels placed."""
    fig, axes = _figure(7.5, 4.8)
    ax = axes[0][0]
    front = pareto_mask(points["median"].to_numpy(), points["error"].to_numpy(),
                        points["noise"].to_numpy() if "noise" in points else None)
    if (~front).any():
        ax.scatter(points["median"][~front], points["error"][~front], s=40, color=_OTHER, zorder=3,
                   label="dominated")
    ax.scatter(points["median"][front], points["error"][front], s=60, color=_FRONT, zorder=4, label="Pareto front")
    chosen = points["selected"].fillna(False).astype(bool) if "selected" in points else None
    if chosen is not None and chosen.any():
        ax.scatter(points["median"][chosen], points["error"][chosen], s=260, marker="*", facecolors="none",
                   edgecolors="#d69e2e", linewidths=1.8, zorder=5, label="selected (select.*)")
    steps = points[front].sort_values("median")
    ax.step(steps["median"], steps["error"], where="post", color=_FRONT, alpha=0.5, zorder=2)
    _error_scale(ax, points["error"].to_numpy())
    ax.set_xlabel("median latency per batch (ms)")
    ax.set_ylabel(error_label)
    ax.set_title("Accuracy against latency (lower-left is better)")
    ax.grid(alpha=0.3)
    fig.legend(fontsize=8, loc="outside right upper")  # outside: no corner of the axes is reliably empty
    _pad_x(ax, points["median"].to_numpy())
    _note(fig, note)  # before the labels: the note moves the axes
    place_labels(ax, points["median"].to_numpy(float), points["error"].to_numpy(float),
                 [str(label) for label in points["label"]])
    return fig


# Where a label may go, in points from its point: eight directions, nearest first, then further out
_DIRECTIONS = ((1, 0.5), (-1, 0.5), (1, -1), (-1, -1), (0, 1), (0, -1.4), (1, 0), (-1, 0))
_RADII_PT = (7, 16, 26, 38, 52, 68, 86, 106)
_POINT_PT = 5.0  # half the side of the box a marker takes


def place_labels(ax, x: np.ndarray, y: np.ndarray, labels: list[str], fontsize: float = 8) -> list:
    """One annotation per point, each at the first candidate offset (_DIRECTIONS x _RADII_PT, nearest first) whose
    box, as the renderer measures it, stays inside the axes and clear of every point and of the labels placed before
    it; labels of points in a cluster are placed from the left. Deterministic, no extra dependency. A label set
    further out than the nearest ring gets a thin leader line; where no candidate is clear (a crowd larger than the
    rings), the one that overlaps least. The axes' limits and the figure's layout must be final: the figure is drawn
    once here to measure."""
    fig = ax.figure
    fig.draw_without_rendering()  # the constrained layout and the scales as they will be saved
    renderer = fig.canvas.get_renderer()
    to_px = fig.dpi / 72
    frame = ax.get_window_extent(renderer)
    shown = np.isfinite(x) & np.isfinite(y)
    at = np.full((len(x), 2), np.nan)
    at[shown] = ax.transData.transform(np.column_stack([x[shown], y[shown]]))
    half = _POINT_PT * to_px
    taken = [Bbox.from_extents(px - half, py - half, px + half, py + half) for px, py in at[shown]]
    out = []
    for i in sorted(np.flatnonzero(shown), key=lambda i: (at[i, 0], -at[i, 1], labels[i])):
        best, best_cost = None, np.inf
        for radius in _RADII_PT:
            for dx, dy in _DIRECTIONS:
                offset = (dx * radius, dy * radius)
                box = _label_box(ax, renderer, labels[i], (x[i], y[i]), offset, fontsize).padded(2)
                cost = sum(_overlap(box, other) for other in taken)
                if not (frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1):
                    cost += 1e9  # outside the axes: only if nothing inside is free
                if cost < best_cost:
                    best, best_cost = (offset, box), cost
                if cost == 0:
                    break
            if best_cost == 0:
                break
        offset, box = best
        out.append(_annotate(ax, labels[i], (x[i], y[i]), offset, fontsize,
                             leader=np.hypot(*offset) > _RADII_PT[0] * 1.5))
        taken.append(box)
    return out


def _alignment(offset: tuple[float, float]) -> dict:
    dx, dy = offset
    return {"ha": "left" if dx > 0 else "right" if dx < 0 else "center",
            "va": "bottom" if dy > 0 else "top" if dy < 0 else "center"}


def _annotate(ax, label: str, xy, offset, fontsize: float, leader: bool = False):
    line = {"arrowprops": {"arrowstyle": "-", "color": "#718096", "lw": 0.6, "shrinkA": 0, "shrinkB": 3}}
    line = line if leader else {}
    note = ax.annotate(label, xy, textcoords="offset points", xytext=offset, fontsize=fontsize, zorder=6,
                       bbox={"boxstyle": "square,pad=0.1", "fc": "white", "ec": "none", "alpha": 0.8},  # over leaders
                       **_alignment(offset), **line)
    note.set_in_layout(False)  # the layout was measured without the labels: they must not move the axes
    return note


def _label_box(ax, renderer, label: str, xy, offset, fontsize: float) -> Bbox:
    """The box a label's text would take at `offset`, in pixels (the text's own box, not its leader line)."""
    trial = _annotate(ax, label, xy, offset, fontsize)
    try:
        trial.update_positions(renderer)  # where its text goes (a draw would do it)
        return Text.get_window_extent(trial, renderer)
    finally:
        trial.remove()


def _overlap(a: Bbox, b: Bbox) -> float:
    """The area two boxes share (0 where they only touch or are apart)."""
    w = min(a.x1, b.x1) - max(a.x0, b.x0)
    h = min(a.y1, b.y1) - max(a.y0, b.y0)
    return w * h if w > 0 and h > 0 else 0.0


def _error_scale(ax, error: np.ndarray) -> None:
    """Errors of different precisions span decades (fp32 ~1e-7, int8 ~1e-2): log when they do; symlog keeps 0."""
    positive = error[error > 0]
    if len(positive) and positive.max() / positive.min() > 100:
        if (error <= 0).any():
            ax.set_yscale("symlog", linthresh=float(positive.min()))
        else:
            ax.set_yscale("log")
            ax.set_ylim(positive.min() / 3, positive.max() * 3)


def _pad_x(ax, values: np.ndarray) -> None:
    """Room on both sides for the point labels."""
    lo, hi = float(np.min(values)), float(np.max(values))
    span = (hi - lo) or max(hi * 0.2, 1e-3)
    pad = 0.15 * span if hi > lo else span  # a single point sits in the middle
    ax.set_xlim(lo - pad, hi + pad)


def distributions(samples: dict[str, np.ndarray], path: Path, note: str | None = None) -> None:
    """Per-iteration latency of each run: box (quartiles, whiskers at p1/p99, outliers as dots)."""
    labels = list(samples)
    fig, axes = _figure(_width(len(labels)), 4.4)
    ax = axes[0][0]
    ax.boxplot([samples[k] for k in labels], positions=range(len(labels)), whis=(1, 99), widths=0.5,
               flierprops={"markersize": 2, "alpha": 0.4}, medianprops={"color": _FRONT})
    counts = [len(samples[k]) for k in labels]
    _categories(ax, [f"{k}\n(n={n})" for k, n in zip(labels, counts)])
    _latency_axis(ax, np.concatenate([samples[k] for k in labels]), "latency per iteration (ms)")
    ax.set_title("Latency distribution per run (box: quartiles; whiskers: p1-p99)")
    ax.grid(axis="y", alpha=0.3)
    _save(fig, path, note)


def top_layers(panels: list[tuple[str, pd.DataFrame]], path: Path, note: str | None = None) -> None:
    """Horizontal bars of the slowest layers, one panel per run. Each frame: layer, layer_type, time_ms, share."""
    rows = max(len(df) for _, df in panels)
    fig, axes = _figure(7.0 * len(panels), 1.0 + 0.32 * rows, ncols=len(panels))
    for ax, (title, df) in zip(axes[0], panels):
        names = [_short(f"{r.layer} ({r.layer_type})") for r in df.itertuples()]
        y = np.arange(len(df))
        ax.barh(y, df["time_ms"], color=_OK, alpha=0.85)
        ax.set_yticks(y, names, fontsize=8)
        ax.invert_yaxis()  # slowest on top
        for yi, (t, s) in enumerate(zip(df["time_ms"], df["share"])):
            ax.annotate(f"{s:.0%}", (t, yi), textcoords="offset points", xytext=(3, -3), fontsize=7)
        ax.set_xlim(0, float(df["time_ms"].max()) * 1.18)
        ax.set_xlabel("time per inference (ms)")
        ax.set_title(title, fontsize=10)
        ax.grid(axis="x", alpha=0.3)
    _save(fig, path, note)


def _short(text: str, limit: int = 44) -> str:
    return text if len(text) <= limit else text[:20] + "..." + text[-(limit - 23):]


def gpu_timeline(series: dict[str, pd.DataFrame], path: Path, note: str | None = None) -> None:
    """SM clock and temperature against time, one line per run. Each frame: t_s, sm_clock_mhz, temp_c."""
    fig, axes = _figure(9.0, 5.6, nrows=2, sharex=True)
    clock, temp = axes[0][0], axes[1][0]
    for label, df in series.items():
        df = df.sort_values("t_s")
        clock.plot(df["t_s"], df["sm_clock_mhz"], lw=1.2, label=label)
        temp.plot(df["t_s"], df["temp_c"], lw=1.2, label=label)
    clock.set_ylabel("SM clock (MHz)")
    clock.set_title("GPU during measurement")
    temp.set_ylabel("temperature (°C)")
    temp.set_xlabel("time into the measurement (s)")
    for ax in (clock, temp):
        ax.grid(alpha=0.3)
    clock.legend(fontsize=8, ncols=min(4, len(series)))
    _save(fig, path, note)


def costs(points: pd.DataFrame, columns: list[str], path: Path, note: str | None = None) -> None:
    """One bar panel per cost column (energy per sample, peak GPU memory while timing), one bar per run.

    points: label and the columns, in display order (pipeline.analysis.report.cost_view)."""
    labels = list(points["label"])
    fig, axes = _figure(_width(len(labels)) * len(columns) / 1.3, 4.2, ncols=len(columns))
    x = np.arange(len(labels))
    for ax, column, colour in zip(axes[0], columns, ("#d69e2e", "#805ad5")):
        values = points[column].astype(float)
        ax.bar(x, values.fillna(0), color=colour, alpha=0.85)
        for xi, v in zip(x, values):
            if v == v:  # not NaN
                ax.annotate(f"{v:.3g}", (xi, v), textcoords="offset points", xytext=(0, 2), ha="center", fontsize=7)
        ax.set_ylabel(column)
        ax.set_title(column.split(" (")[0])
        _categories(ax, labels)
        ax.grid(axis="y", alpha=0.3)
        top = float(values.max()) if values.notna().any() else 1.0
        ax.set_ylim(0, top * 1.15 or 1.0)
    _save(fig, path, note)

"""How far two medians may lie apart by chance, from what the runs measured.

Each benchmark records its headline median's 95 % interval (stages/timing_stats.py `median_interval`: a bootstrap
over the trial medians with benchmark.trials > 1, else a moving-block bootstrap over the iterations in time order)
as the summary stat `median_noise` (half-width, % of the median) with its method in the runs column
`<node>_noise_method`. Two runs' medians differ by chance up to the root sum of squares of their half-widths; where
a side ran the same point several times, the spread of those runs' values (the between-run noise, which no single
run can see: the host got busier, the clocks moved) counts too, and the larger figure is the noise.
Runs recorded before `median_noise` existed keep select's estimate (the trial spread, or CoV / sqrt(N)).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

STAT = "median_noise"
METHOD_SUFFIX = "_noise_method"


@dataclass
class Noise:
    pct: float                # how far apart two values of the metric may lie by chance, in percent
    text: str                 # how it was measured, for the reader
    cov: float | None = None  # the CoV of single iterations (percent), shown beside it


def from_stats(stats: dict, method: str | None = None) -> Noise | None:
    """A run's recorded median noise from its summary as select keys it, (metric, stat) -> (value, unit); None for a
    run recorded before `median_noise`. The headline is gpu_compute where measured, else latency."""
    headline = "gpu_compute" if ("gpu_compute", STAT) in stats else "latency"
    if (headline, STAT) not in stats:
        return None
    value = float(stats[(headline, STAT)][0])
    cov = stats.get((headline, "cov"))
    return Noise(value, f"median ±{pct(value)} at 95% ({method or 'bootstrap'})", float(cov[0]) if cov else None)


def recorded(summary: pd.DataFrame, runs: pd.DataFrame) -> dict[str, Noise]:
    """run_id -> its recorded median noise, for every run that recorded one."""
    rows = summary[summary["stat"].isin([STAT, "cov"])]
    methods = {}
    for column in (c for c in runs.columns if c.endswith(METHOD_SUFFIX)):
        methods.update({r: m for r, m in zip(runs["run_id"], runs[column]) if isinstance(m, str)})
    stats: dict[str, dict] = {}
    for r in rows.itertuples(index=False):
        stats.setdefault(str(r.run_id), {})[(r.metric, r.stat)] = (r.value, r.unit)
    found = {run_id: from_stats(s, methods.get(run_id)) for run_id, s in stats.items()}
    return {run_id: n for run_id, n in found.items() if n is not None}


def between(a: Noise | None, b: Noise | None, spreads: list[tuple[float, int]] = ()) -> Noise | None:
    """The noise of B's value against A's: the root sum of squares of both, or a recorded between-run spread
    ((spread %, runs) of one side's repeated runs of the point), whichever is larger."""
    known = [n for n in (a, b) if n is not None]
    out = None
    if known:
        rss = math.sqrt(sum(n.pct**2 for n in known))
        sides = "; ".join(dict.fromkeys(n.text for n in known))  # each side's own reading, once if the same
        out = Noise(rss, f"±{pct(rss)}, both medians' intervals combined ({sides})" if len(known) == 2
                    else known[0].text)
    for spread, runs in spreads:
        if out is None or spread > out.pct:
            out = Noise(spread, f"±{pct(spread)}: the spread of {runs} runs of this point")
    return out


def spread_pct(values: list[float]) -> float | None:
    """(max - min) / median of repeated runs' values, in percent; None for fewer than two."""
    values = [v for v in values if v is not None and math.isfinite(v)]
    if len(values) < 2:
        return None
    mid = float(pd.Series(values).median())
    return (max(values) - min(values)) / abs(mid) * 100 if mid else math.inf


def pct(value: float) -> str:
    """'0.83%', '12%': two significant digits, never in e-notation."""
    if not math.isfinite(value):
        return f"{value}%"
    return f"{value:.0f}%" if abs(value) >= 10 else f"{value:.2g}%"

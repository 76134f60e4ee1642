"""Latency statistics and warnings computed the way NVIDIA's ``trtexec`` reports them.

Every formula follows ``samples/common/sampleReporting.cpp`` in NVIDIA/TensorRT
(v11; the same code since TensorRT 8.6 apart from the CoV threshold):

* ``getPerformanceResult``: each metric (latency, enqueue, H2D, GPU compute,
  D2H) is sorted on its own, then min = first, max = last, mean = arithmetic
  mean.
* ``findMedian``: middle element for odd N, mean of the two middle elements
  for even N.
* ``findPercentile``: ``sorted[max(N - 1 - int((1 - p/100) * N), 0)]``, a
  nearest-rank rule without interpolation (see :func:`percentile` for the
  floating-point caveat).
* ``findCoeffOfVariance``: sqrt(sum((x - mean)^2) / N) / mean * 100, i.e. the
  *population* standard deviation (divide by N, not N - 1) in percent of the
  mean; infinite when the mean is 0.
* ``printEpilog``: throughput = queries / host walltime; warnings when
  GPU-compute CoV > 2.5 % (``kUNSTABLE_PERF_REPORTING_THRESHOLD``), median
  enqueue > 0.8 * median GPU compute (``kENQUEUE_BOUND_REPORTING_THRESHOLD``),
  median H2D or median D2H >= median GPU compute, and ``infStreams > 1``
  ("Latencies may not be accurate ... use Throughput").

Differences from trtexec, on purpose:

* trtexec accumulates in float32; here everything is float64, so means and
  CoVs can differ from its printout in the last float32 digits.
* On CPU runs, which have no GPU compute time, the end-to-end ``latency``
  metric stands in for ``gpu_compute`` in the CoV and bound checks.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

PERCENTILES = (90, 95, 99)
UNSTABLE_COV_PCT = 2.5  # kUNSTABLE_PERF_REPORTING_THRESHOLD (TensorRT >= 10; it was 1.0 in 8.6)
ENQUEUE_BOUND_RATIO = 0.8  # kENQUEUE_BOUND_REPORTING_THRESHOLD

STAT_KEYS = ("min", "max", "mean", "median", *(f"p{p}" for p in PERCENTILES), "cov")

UNSTABLE = "unstable"
ENQUEUE_BOUND = "enqueue-bound"
TRANSFER_BOUND = "transfer-bound"
LATENCY_UNRELIABLE = "latency-unreliable"


def _check_sorted_input(sorted_values) -> int:
    n = len(sorted_values)
    if n == 0:
        raise ValueError("need at least one timing")
    return n


def percentile(sorted_values, p: float) -> float:
    """trtexec's percentile of an ascending, non-empty sequence.

    Index = ``max(N - 1 - int((1 - p/100) * N), 0)``: drop the ``int((1 - p/100) * N)`` largest values and
    take the largest one left. trtexec evaluates ``(1 - p/100) * N`` in float32 (``float percentile``), and
    so do we, so our p90/p95/p99 pick the same sample as its printout. Float32 rounds some cases down: for
    p=99 and N=100 it gives int(0.99999905) = 0, so p99 is the maximum (the exact rule would drop one value).
    """
    n = _check_sorted_input(sorted_values)
    if not 0 <= p <= 100:
        raise ValueError(f"percentile must be in [0, 100], got {p!r}")
    f32 = np.float32
    exclude = int((f32(1) - f32(p) / f32(100)) * f32(n))
    return float(sorted_values[max(n - 1 - exclude, 0)])


def median(sorted_values) -> float:
    """Middle value for odd N, mean of the two middle values for even N (trtexec ``findMedian``)."""
    n = _check_sorted_input(sorted_values)
    m = n // 2
    if n % 2:
        return float(sorted_values[m])
    return (float(sorted_values[m - 1]) + float(sorted_values[m])) / 2


def describe(values) -> dict[str, float]:
    """min, max, mean, median, p90/p95/p99 and CoV (percent) of one metric's timings.

    ``values`` need not be sorted. Raises ValueError on empty, non-1-D or
    non-finite input.
    """
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"expected a 1-D sequence of timings, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError("need at least one timing")
    if not np.all(np.isfinite(arr)):
        raise ValueError("timings must be finite")
    arr = np.sort(arr)
    mean = float(arr.mean())
    # Population std (divide by N), as trtexec's findCoeffOfVariance does.
    std = float(np.sqrt(np.mean((arr - mean) ** 2)))
    cov = math.inf if mean == 0 else std / mean * 100
    out = {
        "min": float(arr[0]),
        "max": float(arr[-1]),
        "mean": mean,
        "median": median(arr),
    }
    for p in PERCENTILES:
        out[f"p{p}"] = percentile(arr, p)
    out["cov"] = cov
    return out


def _reference_metric(stats: Mapping[str, Mapping[str, float]]) -> Mapping[str, float] | None:
    # GPU compute time is trtexec's reference; CPU runs only have end-to-end latency.
    if "gpu_compute" in stats:
        return stats["gpu_compute"]
    return stats.get("latency")


def verdicts(stats: Mapping[str, Mapping[str, float]], streams: int = 1) -> list[str]:
    """trtexec's performance warnings as short verdict strings; empty list means stable.

    ``stats`` maps metric name ("gpu_compute" or "latency", "enqueue", "h2d",
    "d2h"; each optional) to :func:`describe` output. The reference for CoV and
    the bound checks is "gpu_compute", else "latency". Thresholds are strict
    where trtexec's are: CoV > 2.5 and enqueue > 0.8 * compute; transfers use
    >=. Verdicts come back in a fixed order: unstable, enqueue-bound,
    transfer-bound, latency-unreliable.
    """
    out: list[str] = []
    ref = _reference_metric(stats)
    if ref is not None:
        if ref["cov"] > UNSTABLE_COV_PCT:
            out.append(UNSTABLE)
        compute = ref["median"]
        enq = stats.get("enqueue")
        if enq is not None and enq["median"] > ENQUEUE_BOUND_RATIO * compute:
            out.append(ENQUEUE_BOUND)
        if any(
            stats.get(name) is not None and stats[name]["median"] >= compute
            for name in ("h2d", "d2h")
        ):
            out.append(TRANSFER_BOUND)
    if streams > 1:
        # Several inference streams overlap, so per-query latencies are not meaningful.
        out.append(LATENCY_UNRELIABLE)
    return out


def verdict_label(verdict_list: Sequence[str]) -> str:
    """"stable" for no verdicts, else the verdicts sorted and joined with "+"."""
    if not verdict_list:
        return "stable"
    return "+".join(sorted(verdict_list))


def summary_rows(stats: Mapping[str, Mapping[str, float]], unit: str = "ms") -> list[dict]:
    """Long-form rows ``{"metric", "stat", "value", "unit"}``, one per metric and stat.

    Metrics and stats keep the order of the given mappings; "cov" gets unit "%".
    """
    return [
        {
            "metric": metric,
            "stat": stat,
            "value": float(value),
            "unit": "%" if stat == "cov" else unit,
        }
        for metric, desc in stats.items()
        for stat, value in desc.items()
    ]


def throughput(n_queries: int, batch_size: int, bench_time_s: float) -> dict[str, float]:
    """Queries and samples per second over the timed (post-warm-up) walltime.

    trtexec prints ``batch * queries / walltime`` as "qps" with batch = 1 for
    explicit-batch engines; here both counts are returned separately.
    """
    if not bench_time_s > 0:
        raise ValueError(f"bench_time_s must be > 0, got {bench_time_s!r}")
    if n_queries < 0:
        raise ValueError(f"n_queries must be >= 0, got {n_queries!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
    return {
        "qps": n_queries / bench_time_s,
        "samples_per_s": batch_size * n_queries / bench_time_s,
    }

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
from dataclasses import dataclass

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


def verdicts(stats: Mapping[str, Mapping[str, float]], streams: int = 1, stable: bool | None = None) -> list[str]:
    """trtexec's performance warnings as short verdict strings; empty list means stable.

    ``stats`` maps metric name ("gpu_compute" or "latency", "enqueue", "h2d",
    "d2h"; each optional) to :func:`describe` output. The reference for CoV and
    the bound checks is "gpu_compute", else "latency". Thresholds are strict
    where trtexec's are: CoV > 2.5 and enqueue > 0.8 * compute; transfers use
    >=. Verdicts come back in a fixed order: unstable, enqueue-bound,
    transfer-bound, latency-unreliable. `stable`, where the measurement ran until its window medians agreed
    (benchmark.until_stable), replaces the CoV rule: the CoV of single iterations says how jittery one call is,
    not whether the median has settled (on a host CPU it is often far above 2.5 % while the median repeats).
    """
    out: list[str] = []
    ref = _reference_metric(stats)
    if stable is False:
        out.append(UNSTABLE)
    if ref is not None:
        if stable is None and ref["cov"] > UNSTABLE_COV_PCT:
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


# --------------------------------------------------------------------------- noise of the median, measured
# How far the median of a run could move by chance, from the run's own timings. Iterations are not independent
# (clocks, power caps and neighbours on a shared host drift), so the classic 1.96 x 1.2533 x sd / sqrt(N) is too
# narrow wherever the timings drift. With several trials, the trials are the independent units: a bootstrap over
# their medians. With one, a moving-block bootstrap (Kuensch 1989) over the iterations in time order: blocks long
# enough to hold the drift, their length chosen from the data (Politis & White 2004, with Patton, Politis & White's
# 2009 correction), so that i.i.d. timings get blocks of about one iteration and the classic width back. The length
# is chosen on the series that drives the median's error, whether each iteration lies below the median (its
# influence function): on the raw timings a few 1000x outliers (a host's preemptions) hide the drift of the bulk.

CONFIDENCE = 0.95
RESAMPLES = 1000
_RESAMPLED_VALUES = 20_000_000  # a long run gets fewer resamples (at least MIN_RESAMPLES): about a second's work
MIN_RESAMPLES = 200
_CHUNK_VALUES = 4_000_000  # resampled values held at once (32 MB of float64)


@dataclass(frozen=True)
class MedianInterval:
    median: float
    low: float
    high: float
    method: str  # how the interval was measured, for the reader

    @property
    def half_width_pct(self) -> float:
        """The larger side of the interval, in percent of the median: the noise two medians are compared with."""
        if self.median == 0:
            return math.inf
        return max(self.high - self.median, self.median - self.low) / abs(self.median) * 100


def _interval(estimates: np.ndarray, confidence: float) -> tuple[float, float]:
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(estimates, [tail, 100 - tail])
    return float(low), float(high)


def _check_confidence(confidence: float) -> None:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")


def trial_median_interval(trial_medians, confidence: float = CONFIDENCE, resamples: int = RESAMPLES,
                          seed: int = 0) -> MedianInterval:
    """Percentile-bootstrap interval of the median of `trial_medians` (at least 2), resampling whole trials."""
    _check_confidence(confidence)
    m = np.asarray(trial_medians, dtype=np.float64)
    if m.ndim != 1 or m.size < 2:
        raise ValueError(f"need the medians of at least 2 trials, got {m.size}")
    rng = np.random.default_rng(seed)
    estimates = np.median(m[rng.integers(0, m.size, size=(resamples, m.size))], axis=1)
    low, high = _interval(estimates, confidence)
    return MedianInterval(float(np.median(m)), low, high, f"bootstrap over {m.size} trial medians")


def block_length(values) -> int:
    """Politis & White's automatic block length for a (circular/moving) block bootstrap of `values` in time order.

    The first lag m after which K_N autocorrelations in a row are insignificant (|rho| < 2 sqrt(log10 N / N)) sets a
    flat-top lag window of width 2m; the spectral sums under it give b = (2 G^2 / D)^(1/3) N^(1/3), D = 4/3 g^2,
    kept within [1, min(3 sqrt(N), N/3)]. Uncorrelated timings give 1; drifting ones, long blocks.
    """
    x = np.asarray(values, dtype=np.float64)
    n = x.size
    if n < 8:
        return 1
    x = x - x.mean()
    kn = max(5, int(math.sqrt(math.log10(n))))
    m_max = min(int(math.ceil(math.sqrt(n))) + kn, n - 1)
    b_max = int(math.ceil(min(3 * math.sqrt(n), n / 3)))
    size = 1 << int(2 * n - 1).bit_length()  # autocovariances by FFT, zero-padded: no wrap-around
    spectrum = np.fft.rfft(x, size)
    acov = np.fft.irfft(spectrum * np.conj(spectrum), size)[: m_max + 1] / n
    if acov[0] <= 0:
        return 1  # constant timings: nothing to hold together
    insignificant = np.abs(acov[1:] / acov[0]) < 2 * math.sqrt(math.log10(n) / n)
    m_hat = m_max
    for m in range(m_max - kn + 1):
        if insignificant[m: m + kn].all():
            m_hat = m
            break
    window = min(2 * max(m_hat, 1), m_max)
    lags = np.arange(1, window + 1)
    t = lags / window
    flat_top = np.where(t <= 0.5, 1.0, 2 * (1 - t))
    g = acov[0] + 2 * np.sum(flat_top * acov[lags])
    big_g = 2 * np.sum(flat_top * lags * acov[lags])
    if g <= 0:
        return 1
    b = (2 * big_g**2 / (4 / 3 * g**2)) ** (1 / 3) * n ** (1 / 3)
    return int(min(max(round(b), 1), b_max))


def block_bootstrap_interval(values, block: int | None = None, confidence: float = CONFIDENCE,
                             resamples: int | None = None, seed: int = 0) -> MedianInterval:
    """Moving-block-bootstrap interval of the median of `values` (one trial's timings in the order they ran).

    Each resample glues ceil(N / block) blocks of `block` consecutive iterations, each starting anywhere, and cuts
    it to N; the interval is the percentiles of the resamples' medians. `block` defaults to :func:`block_length`;
    block=1 is the ordinary (i.i.d.) bootstrap. `resamples` defaults to RESAMPLES, fewer for a long run.
    """
    _check_confidence(confidence)
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1 or x.size < 2:
        raise ValueError(f"need at least 2 timings in time order, got {x.size}")
    n = x.size
    b = block_length(x <= np.median(x)) if block is None else int(block)
    if not 1 <= b <= n:
        raise ValueError(f"block must be in [1, {n}], got {block!r}")
    if resamples is None:
        resamples = min(RESAMPLES, max(MIN_RESAMPLES, _RESAMPLED_VALUES // n))
    rng = np.random.default_rng(seed)
    blocks = -(-n // b)
    offsets = np.arange(b)
    estimates = np.empty(resamples)
    step = max(1, _CHUNK_VALUES // n)
    for lo in range(0, resamples, step):
        k = min(step, resamples - lo)
        starts = rng.integers(0, n - b + 1, size=(k, blocks))
        idx = (starts[:, :, None] + offsets).reshape(k, -1)[:, :n]
        estimates[lo: lo + k] = np.median(x[idx], axis=1)
    low, high = _interval(estimates, confidence)
    return MedianInterval(float(np.median(x)), low, high,
                          f"moving-block bootstrap over {n} iterations, blocks of {b}")


def median_interval(trials: Sequence[Sequence[float]], confidence: float = CONFIDENCE,
                    seed: int = 0) -> MedianInterval:
    """The noise of a run's median: over the trial medians with several trials, else a block bootstrap of the one."""
    if len(trials) > 1:
        return trial_median_interval([np.median(t) for t in trials], confidence, seed=seed)
    return block_bootstrap_interval(trials[0], confidence=confidence, seed=seed)

"""Tests for stages.timing_stats against hand-computed trtexec statistics."""

from __future__ import annotations

import math
import random
import re
import struct

import numpy as np
import pytest

from stages import timing_stats as ts
from stages.timing_stats import (
    ENQUEUE_BOUND_RATIO,
    PERCENTILES,
    UNSTABLE_COV_PCT,
    describe,
    median,
    percentile,
    summary_rows,
    throughput,
    verdict_label,
    verdicts,
)


def _stats(median_: float, cov: float = 0.0) -> dict[str, float]:
    """A describe()-shaped dict where only median and cov matter."""
    return {
        "min": median_, "max": median_, "mean": median_, "median": median_,
        "p90": median_, "p95": median_, "p99": median_, "cov": cov,
    }


# ---------------------------------------------------------------- constants


def test_constants():
    assert PERCENTILES == (90, 95, 99)
    assert UNSTABLE_COV_PCT == 2.5
    assert ENQUEUE_BOUND_RATIO == 0.8
    assert ts.STAT_KEYS == ("min", "max", "mean", "median", "p90", "p95", "p99", "cov")


# ---------------------------------------------------------------- describe


def test_describe_one_to_ten():
    # N=10, values 1..10
    # mean = 55/10 = 5.5; median = (5 + 6)/2 = 5.5
    # p90: index 10-1-floor(0.1*10) = 9-1 = 8 -> 9.0
    # p95: index 9-floor(0.05*10) = 9-floor(0.5) = 9 -> 10.0
    # p99: index 9-floor(0.01*10) = 9-0 = 9 -> 10.0
    # population variance = (N^2-1)/12 = 99/12 = 8.25 -> std = sqrt(8.25) = 2.8722813...
    # cov = sqrt(8.25)/5.5*100 = 52.2232967...%
    d = describe(list(range(1, 11)))
    assert d == pytest.approx({
        "min": 1.0, "max": 10.0, "mean": 5.5, "median": 5.5,
        "p90": 9.0, "p95": 10.0, "p99": 10.0, "cov": math.sqrt(8.25) / 5.5 * 100,
    })
    assert d["cov"] == pytest.approx(52.2232967, abs=1e-6)
    assert list(d) == list(ts.STAT_KEYS)
    assert all(type(v) is float for v in d.values())


def test_describe_odd_n_unsorted():
    # [3, 1, 2, 5, 4] -> sorted 1..5
    # mean 3, median = middle = 3
    # p90: 5-1-floor(0.1*5)=4-floor(0.5)=4 -> 5; p95, p99 likewise -> 5
    # population variance = ((-2)^2+(-1)^2+0+1+4)/5 = 10/5 = 2 -> cov = sqrt(2)/3*100 = 47.1404520...%
    values = [3.0, 1.0, 2.0, 5.0, 4.0]
    d = describe(values)
    assert values == [3.0, 1.0, 2.0, 5.0, 4.0]  # input not mutated
    assert d == pytest.approx({
        "min": 1.0, "max": 5.0, "mean": 3.0, "median": 3.0,
        "p90": 5.0, "p95": 5.0, "p99": 5.0, "cov": 47.14045207910317,
    })


def test_describe_even_n_unsorted_numpy_input():
    # [0.4, 0.1, 0.3, 0.2] -> sorted [0.1, 0.2, 0.3, 0.4]
    # median = (0.2+0.3)/2 = 0.25, mean = 0.25
    # p90: 4-1-floor(0.1*4)=3-0=3 -> 0.4 (and p95, p99 too)
    # deviations -0.15,-0.05,0.05,0.15 -> var = (0.0225+0.0025)*2/4 = 0.0125
    # cov = sqrt(0.0125)/0.25*100 = 44.72135955%
    arr = np.array([0.4, 0.1, 0.3, 0.2])
    d = describe(arr)
    assert list(arr) == [0.4, 0.1, 0.3, 0.2]
    assert d == pytest.approx({
        "min": 0.1, "max": 0.4, "mean": 0.25, "median": 0.25,
        "p90": 0.4, "p95": 0.4, "p99": 0.4, "cov": 44.72135955,
    })


def test_describe_single_value():
    # N=1: every statistic is the value; std 0 -> cov 0
    # percentile index = max(1-1-floor(0.1*1), 0) = 0
    d = describe([7.25])
    assert d == {
        "min": 7.25, "max": 7.25, "mean": 7.25, "median": 7.25,
        "p90": 7.25, "p95": 7.25, "p99": 7.25, "cov": 0.0,
    }


def test_describe_constant_values_cov_zero():
    assert describe([2.0] * 9)["cov"] == 0.0


def test_describe_zero_mean_cov_is_inf():
    # trtexec's findCoeffOfVariance returns +inf when the mean is 0
    assert describe([0.0, 0.0, 0.0])["cov"] == math.inf


def test_describe_population_not_sample_std():
    # [1, 3]: mean 2; population std = sqrt((1+1)/2) = 1 -> cov 50%
    # (the sample std would be sqrt(2) -> 70.71%)
    assert describe([3, 1])["cov"] == pytest.approx(50.0)


@pytest.mark.parametrize("bad", [[], np.array([]), [[1.0, 2.0], [3.0, 4.0]], [1.0, float("nan")], [math.inf]])
def test_describe_rejects_bad_input(bad):
    with pytest.raises(ValueError):
        describe(bad)


# ---------------------------------------------------------------- percentile / median


@pytest.mark.parametrize(
    ("n", "p", "expected"),
    [
        # trtexec computes int((1 - p/100) * N) in float32; the products below are float32 values.
        # N=10, p=90: (1-0.9f)*10 = 1.0000002 -> 1 -> index 9-1 = 8 -> 9
        # (float64 would give 0.9999999999999998 -> 0 -> index 9 -> 10)
        (10, 90, 9.0),
        # N=100, p=99: (1-0.99f)*100 = 0.99999905 -> 0 -> index 99 -> 100 (the max, as trtexec prints)
        (100, 99, 100.0),
        # N=100, p=95: 0.05*100 = 5 -> index 94 -> 95; p=90: 10 -> index 89 -> 90
        (100, 95, 95.0),
        (100, 90, 90.0),
        # N=20, p=95: 0.05*20 = 1 -> index 19-1 = 18 -> 19
        (20, 95, 19.0),
        # N=20, p=90: 0.1*20 = 2 -> index 17 -> 18; p=99: floor(0.2)=0 -> index 19 -> 20
        (20, 90, 18.0),
        (20, 99, 20.0),
        # N=1000, p=99: 9.999991 -> 9 -> index 999-9 = 990 -> 991
        (1000, 99, 991.0),
        # N=1000, p=99.9 (a non-integer p): (1-0.999f)*1000 = 0.99998713 -> 0 -> index 999 -> 1000
        (1000, 99.9, 1000.0),
        # N=10, p=50: floor(0.5*10)=5 -> index 4 -> 5 (nearest rank, not the median 5.5)
        (10, 50, 5.0),
        # p=100 -> exclude 0 -> max; p=0 -> exclude N -> index max(-1, 0) = 0 -> min
        (10, 100, 10.0),
        (10, 0, 1.0),
        # N=7, p=95: floor(0.05*7)=floor(0.35)=0 -> index 6 -> 7
        (7, 95, 7.0),
    ],
)
def test_percentile_index_rule(n, p, expected):
    values = [float(i) for i in range(1, n + 1)]
    assert percentile(values, p) == expected
    assert percentile(np.array(values), p) == expected


def test_percentile_float_p_same_as_int_p():
    values = list(range(1, 11))
    assert percentile(values, 90.0) == percentile(values, 90) == 9.0


@pytest.mark.parametrize("p", [-0.1, 100.1, float("nan")])
def test_percentile_rejects_out_of_range(p):
    with pytest.raises(ValueError):
        percentile([1.0, 2.0], p)


def test_percentile_and_median_reject_empty():
    with pytest.raises(ValueError):
        percentile([], 90)
    with pytest.raises(ValueError):
        median([])


def test_median():
    assert median([1.0, 2.0, 10.0]) == 2.0  # odd: middle
    assert median([1.0, 2.0, 4.0, 10.0]) == 3.0  # even: (2+4)/2
    assert median([5.0]) == 5.0
    assert median(np.array([1.0, 2.0])) == 1.5


# ---------------------------------------------------------------- verdicts


def test_verdicts_stable():
    stats = {
        "gpu_compute": _stats(5.0, cov=1.0),
        "enqueue": _stats(1.0),
        "h2d": _stats(0.5),
        "d2h": _stats(0.5),
    }
    assert verdicts(stats) == []
    assert verdict_label(verdicts(stats)) == "stable"


def test_unstable_boundary_from_real_timings():
    # [97.5, 102.5]: mean 100, population std 2.5 -> cov exactly 2.5 -> not unstable (strict >)
    at = describe([97.5, 102.5])
    assert at["cov"] == 2.5
    assert verdicts({"gpu_compute": at}) == []
    # [97.4, 102.6]: std 2.6 -> cov 2.6 > 2.5 -> unstable
    above = describe([97.4, 102.6])
    assert above["cov"] == pytest.approx(2.6)
    assert verdicts({"gpu_compute": above}) == ["unstable"]


def test_unstable_boundary_literal():
    assert verdicts({"gpu_compute": _stats(1.0, cov=2.5)}) == []
    assert verdicts({"gpu_compute": _stats(1.0, cov=2.5000001)}) == ["unstable"]


def test_unstable_on_cpu_uses_latency():
    assert verdicts({"latency": _stats(1.0, cov=3.0)}) == ["unstable"]
    assert verdicts({"latency": _stats(1.0, cov=2.5)}) == []


def test_gpu_compute_takes_precedence_over_latency():
    stats = {"gpu_compute": _stats(1.0, cov=0.5), "latency": _stats(2.0, cov=10.0)}
    assert verdicts(stats) == []


def test_enqueue_bound_boundary():
    # compute median 5.0 -> threshold 0.8*5.0 = 4.0 (exact in float64)
    compute = _stats(5.0)
    assert 0.8 * 5.0 == 4.0
    assert verdicts({"gpu_compute": compute, "enqueue": _stats(4.0)}) == []  # exactly 0.8x
    assert verdicts({"gpu_compute": compute, "enqueue": _stats(4.001)}) == ["enqueue-bound"]
    assert verdicts({"gpu_compute": compute, "enqueue": _stats(3.9)}) == []


def test_transfer_bound_boundary():
    compute = _stats(2.0)
    assert verdicts({"gpu_compute": compute, "h2d": _stats(2.0)}) == ["transfer-bound"]  # equal fires (>=)
    assert verdicts({"gpu_compute": compute, "h2d": _stats(1.999)}) == []
    assert verdicts({"gpu_compute": compute, "d2h": _stats(2.0)}) == ["transfer-bound"]
    assert verdicts({"gpu_compute": compute, "d2h": _stats(1.999)}) == []
    # both transfers bound -> reported once
    assert verdicts({"gpu_compute": compute, "h2d": _stats(3.0), "d2h": _stats(3.0)}) == ["transfer-bound"]


def test_streams_latency_unreliable():
    stats = {"gpu_compute": _stats(1.0)}
    assert verdicts(stats, streams=1) == []
    assert verdicts(stats, streams=2) == ["latency-unreliable"]
    assert verdicts({}, streams=4) == ["latency-unreliable"]


def test_verdicts_without_reference_metric():
    # no gpu_compute/latency: nothing to compare enqueue/transfers against
    assert verdicts({"enqueue": _stats(9.0), "h2d": _stats(9.0)}) == []


def test_all_verdicts_and_label():
    stats = {
        "gpu_compute": _stats(1.0, cov=5.0),
        "enqueue": _stats(0.9),
        "h2d": _stats(1.0),
        "d2h": _stats(0.1),
    }
    v = verdicts(stats, streams=2)
    assert v == ["unstable", "enqueue-bound", "transfer-bound", "latency-unreliable"]
    assert verdict_label(v) == "enqueue-bound+latency-unreliable+transfer-bound+unstable"


def test_verdict_label():
    assert verdict_label([]) == "stable"
    assert verdict_label(["unstable"]) == "unstable"
    assert verdict_label(["unstable", "enqueue-bound"]) == "enqueue-bound+unstable"


# ---------------------------------------------------------------- summary rows


def test_summary_rows_shape_and_units():
    stats = {"gpu_compute": describe([1.0, 2.0, 3.0]), "h2d": describe([0.1, 0.2])}
    rows = summary_rows(stats)
    assert len(rows) == 2 * 8
    assert all(set(r) == {"metric", "stat", "value", "unit"} for r in rows)
    assert [r["metric"] for r in rows] == ["gpu_compute"] * 8 + ["h2d"] * 8
    assert [r["stat"] for r in rows[:8]] == list(ts.STAT_KEYS)
    for r in rows:
        assert r["unit"] == ("%" if r["stat"] == "cov" else "ms")
        assert type(r["value"]) is float
    by_key = {(r["metric"], r["stat"]): r["value"] for r in rows}
    assert by_key[("gpu_compute", "median")] == 2.0
    assert by_key[("h2d", "median")] == pytest.approx(0.15)


def test_summary_rows_custom_unit_and_empty():
    rows = summary_rows({"latency": describe([1.0])}, unit="us")
    assert {r["unit"] for r in rows} == {"us", "%"}
    assert summary_rows({}) == []


# ---------------------------------------------------------------- throughput


def test_throughput():
    # 1000 queries of batch 8 in 2 s -> 500 qps, 4000 samples/s
    assert throughput(1000, 8, 2.0) == {"qps": 500.0, "samples_per_s": 4000.0}
    assert throughput(3, 1, 0.5) == {"qps": 6.0, "samples_per_s": 6.0}


@pytest.mark.parametrize("t", [0.0, -1.0, float("nan")])
def test_throughput_rejects_nonpositive_time(t):
    with pytest.raises(ValueError):
        throughput(10, 1, t)


def test_throughput_rejects_bad_counts():
    with pytest.raises(ValueError):
        throughput(-1, 1, 1.0)
    with pytest.raises(ValueError):
        throughput(10, 0, 1.0)


# ---------------------------------------------------------------- property test


def _f32(x):
    return struct.unpack("f", struct.pack("f", x))[0]


def _reference_describe(values):
    """Straightforward pure-Python transcription of trtexec's formulas, float32 arithmetic via struct."""
    s = sorted(float(v) for v in values)
    n = len(s)
    mean = math.fsum(s) / n
    med = s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2
    out = {"min": s[0], "max": s[-1], "mean": mean, "median": med}
    for p in PERCENTILES:
        # int((1 - p/100) * n) with every operation rounded to float32, as in trtexec's C++
        exclude = int(_f32(_f32(1.0 - _f32(_f32(p) / 100.0)) * _f32(n)))
        out[f"p{p}"] = s[max(n - 1 - exclude, 0)]
    var = math.fsum((x - mean) ** 2 for x in s) / n
    out["cov"] = math.sqrt(var) / mean * 100
    return out


def test_describe_matches_reference_on_random_data():
    rng = random.Random(1234)
    sizes = [1, 2, 3, 10, 20, 99, 100, 101, 200, 1000] + [rng.randint(1, 500) for _ in range(40)]
    for n in sizes:
        values = [rng.lognormvariate(0.0, 0.3) * 5 for _ in range(n)]
        got = describe(values)
        want = _reference_describe(values)
        assert set(got) == set(want)
        for key in want:
            assert got[key] == pytest.approx(want[key], rel=1e-12, abs=1e-12), (n, key)
        # order statistics are picked, not computed: must match exactly
        for key in ("min", "max", *(f"p{p}" for p in PERCENTILES)):
            assert got[key] == want[key], (n, key)


# --------------------------------------------------------------------------- the median's noise, measured

def _classic_half_width(x: np.ndarray) -> float:
    """The independent-iterations model this replaces: 1.96 x 1.2533 x sd / sqrt(N) (normal data)."""
    return 1.96 * 1.2533 * x.std() / math.sqrt(x.size)


def test_iid_timings_get_short_blocks_and_the_classic_interval():
    rng = np.random.default_rng(7)
    x = 1.0 + 0.05 * rng.standard_normal(4000)
    assert ts.block_length(x) <= 3
    iv = ts.block_bootstrap_interval(x)
    half = (iv.high - iv.low) / 2
    assert half == pytest.approx(_classic_half_width(x), rel=0.25)
    assert iv.low < iv.median < iv.high and iv.median == pytest.approx(np.median(x))
    assert iv.half_width_pct == pytest.approx(max(iv.high - iv.median, iv.median - iv.low) / iv.median * 100)


@pytest.mark.parametrize("drift", ["sine", "random walk", "step", "sine under outliers"])
def test_drifting_timings_get_a_wider_interval_than_the_iid_bootstrap(drift):
    rng = np.random.default_rng(3)
    n = 4000
    t = np.arange(n)
    noise = 0.05 * rng.standard_normal(n)
    level = {"sine": 0.03 * np.sin(2 * np.pi * t / 1500),
             "random walk": np.cumsum(rng.standard_normal(n)) * 0.002,
             "step": np.where(t < n // 2, 0.0, 0.04),
             "sine under outliers": 0.03 * np.sin(2 * np.pi * t / 1500)}[drift]
    x = 1.0 + level + noise
    if drift == "sine under outliers":  # a busy host's preemptions: 1 % of calls 1000x slower
        x[rng.random(n) < 0.01] *= 1000
    blocked, iid = ts.block_bootstrap_interval(x), ts.block_bootstrap_interval(x, block=1)
    assert int(blocked.method.rsplit(" ", 1)[1]) > 20  # blocks of more than 20 iterations
    assert blocked.half_width_pct > 2 * iid.half_width_pct
    if drift != "sine under outliers":  # there the outliers' sd makes the classic figure meaninglessly wide
        assert (blocked.high - blocked.low) / 2 > 2 * _classic_half_width(x)


def test_trial_medians_bound_the_interval():
    iv = ts.trial_median_interval([1.0, 1.1, 0.9, 1.3, 1.05])
    assert iv.median == 1.05 and 0.9 <= iv.low < 1.05 < iv.high <= 1.3
    assert "5 trial medians" in iv.method
    two = ts.trial_median_interval([1.0, 1.2])
    assert (two.low, two.high) == (1.0, 1.2)  # two trials: the interval is their range


def test_median_interval_uses_trials_when_there_are_several():
    rng = np.random.default_rng(0)
    one = [list(1 + 0.01 * rng.standard_normal(500))]
    assert "block bootstrap" in ts.median_interval(one).method
    assert "3 trial medians" in ts.median_interval([one[0], one[0], [2.0] * 10]).method


@pytest.mark.parametrize("call, message", [
    (lambda: ts.trial_median_interval([1.0]), "at least 2 trials"),
    (lambda: ts.block_bootstrap_interval([1.0]), "at least 2 timings"),
    (lambda: ts.block_bootstrap_interval([1.0, 2.0], block=3), "block must be in [1, 2]"),
    (lambda: ts.block_bootstrap_interval([1.0, 2.0], confidence=1.0), "confidence must be in (0, 1)"),
])
def test_bad_input_is_one_clear_error(call, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        call()


def test_stable_from_the_window_loop_replaces_the_cov_rule():
    jittery = {"latency": _stats(1.0, cov=200.0)}
    assert verdicts(jittery) == [ts.UNSTABLE]
    assert verdicts(jittery, stable=True) == []
    assert verdicts({"latency": _stats(1.0, cov=0.1)}, stable=False) == [ts.UNSTABLE]

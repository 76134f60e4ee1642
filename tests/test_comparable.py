"""Comparable or not: two runs rows recorded under the same or different conditions (pipeline/analysis/comparable.py),
and the noise between two medians (pipeline/analysis/noise.py)."""
from __future__ import annotations

import math

import pandas as pd
import pytest

from pipeline.analysis import comparable, noise

GPU_ROW = {"env_gpu": "NVIDIA H100 80GB HBM3", "env_driver": "580.65", "env_cuda": "13.0", "env_torch": "2.13.0",
           "env_onnxruntime": "1.24.4", "env_tensorrt": "11.1.0", "env_cpu": "AMD EPYC",
           "benchmark_sm_clock_median_mhz": 1980.0, "benchmark_power_cap_w": 700.0,
           "benchmark_timed_throttle_reasons": None, "benchmark_cpu_load": None}
CPU_ROW = {"env_gpu": None, "env_cpu": "AMD EPYC", "env_onnxruntime": "1.24.4", "env_tensorrt": float("nan"),
           "benchmark_cpu_load": 0.4, "benchmark_cpu_count": 2}


def test_the_same_conditions_are_comparable():
    assert comparable.differences(GPU_ROW, dict(GPU_ROW)) == []
    assert comparable.differences(CPU_ROW, {**CPU_ROW, "benchmark_cpu_load": 1.2}) == []  # 0.4 per core apart
    assert comparable.text([]) == "comparable"


@pytest.mark.parametrize("change, said", [
    ({"env_gpu": "NVIDIA H200"}, "GPU NVIDIA H100 80GB HBM3 vs NVIDIA H200"),
    ({"env_driver": "575.51"}, "driver 580.65 vs 575.51"),
    ({"env_cuda": "12.9"}, "cuda 13.0 vs 12.9"),
    ({"env_tensorrt": "10.13.0"}, "tensorrt 11.1.0 vs 10.13.0"),
    ({"env_torch": "2.12.0"}, "torch 2.13.0 vs 2.12.0"),
    ({"benchmark_sm_clock_median_mhz": 1900.0}, "median SM clock 1980 vs 1900 MHz (4% apart, more than 3%)"),
    ({"benchmark_power_cap_w": 500.0}, "power cap 700 vs 500 W"),
    ({"benchmark_timed_throttle_reasons": "sw_power_cap"}, "throttled by nothing vs sw_power_cap"),
    ({"env_cpu": "Intel Xeon"}, "CPU AMD EPYC vs Intel Xeon"),
])
def test_each_difference_is_named(change, said):
    why = comparable.differences(GPU_ROW, {**GPU_ROW, **change})
    assert why == [said]
    assert comparable.text(why) == f"not comparable: {said}"


def test_a_clock_within_3_percent_and_a_version_one_side_lacks_are_no_difference():
    assert comparable.differences(GPU_ROW, {**GPU_ROW, "benchmark_sm_clock_median_mhz": 1935.0}) == []
    assert comparable.differences(CPU_ROW, {**CPU_ROW, "env_tensorrt": "11.1.0"}) == []


def test_cpu_load_apart_is_not_comparable():
    why = comparable.differences(CPU_ROW, {**CPU_ROW, "benchmark_cpu_load": 3.1})
    assert why == ["CPU load 0.4 vs 3.1 on 2 / 2 cores"]
    assert comparable.differences(CPU_ROW, {**CPU_ROW, "benchmark_cpu_load": None}) == []  # not recorded: unknown


def test_other_processes_share_of_the_cpu_decides_where_both_recorded_it():
    quiet, busier = {**CPU_ROW, "benchmark_cpu_others_pct": 5.0}, {**CPU_ROW, "benchmark_cpu_others_pct": 17.0}
    assert comparable.differences(quiet, busier) == ["other processes took 5% vs 17% of the CPU while measuring"]
    assert comparable.differences(quiet, {**quiet, "benchmark_cpu_others_pct": 14.0}) == []  # 9 points apart
    # a saturated host makes a pair incomparable even where both sides were as busy
    saturated = {**CPU_ROW, "benchmark_cpu_others_pct": 70.0}
    assert comparable.differences(saturated, {**saturated, "benchmark_cpu_others_pct": 79.0}) == [
        "the host was busy: other processes took 70% (A) and 79% (B) of the CPU while measuring (more than 20%)"]
    # the share, measured during the run, outranks the lagging load average
    assert comparable.differences(quiet, {**quiet, "benchmark_cpu_load": 3.1}) == []


def test_others_share_from_two_snapshots(monkeypatch):
    from stages import cpu_timing

    monkeypatch.setattr(cpu_timing.os, "cpu_count", lambda: 2)
    # 2 s of wall on 2 cores = 4 CPU-seconds; the host was busy 3 s of them, 1 s of which was this process
    assert cpu_timing.others_pct((100.0, 5.0, 10.0), (103.0, 6.0, 12.0)) == pytest.approx(50.0)
    assert cpu_timing.others_pct(None, (1.0, 1.0, 1.0)) is None
    assert cpu_timing.others_pct((100.0, 5.0, 10.0), (100.0, 6.0, 12.0)) == 0.0  # clipped: never below 0
    assert cpu_timing._cpu_use() is None or len(cpu_timing._cpu_use()) == 3


def test_a_gpu_run_against_a_cpu_run_differs():
    assert "GPU NVIDIA H100 80GB HBM3 vs none" in comparable.differences(GPU_ROW, CPU_ROW)


def test_noise_between_two_medians_is_the_root_sum_of_squares_or_a_recorded_spread():
    a, b = noise.Noise(3.0, "a"), noise.Noise(4.0, "b")
    assert noise.between(a, b).pct == pytest.approx(5.0)
    assert noise.between(a, None).pct == 3.0 and noise.between(None, None) is None
    wider = noise.between(a, b, [(12.0, 3)])
    assert wider.pct == 12.0 and "spread of 3 runs" in wider.text
    assert noise.spread_pct([1.0, 1.1, 0.9]) == pytest.approx(20.0)
    assert noise.spread_pct([1.0]) is None and math.isinf(noise.spread_pct([0.0, 0.0, 1.0]))


def test_recorded_noise_is_read_from_the_summary():
    summary = pd.DataFrame([
        {"run_id": "r", "metric": "latency", "stat": "median_noise", "value": 1.5, "unit": "%"},
        {"run_id": "r", "metric": "latency", "stat": "cov", "value": 40.0, "unit": "%"},
        {"run_id": "g", "metric": "latency", "stat": "median_noise", "value": 9.0, "unit": "%"},
        {"run_id": "g", "metric": "gpu_compute", "stat": "median_noise", "value": 0.5, "unit": "%"}])
    runs = pd.DataFrame({"run_id": ["r", "g"], "benchmark_noise_method": ["moving-block bootstrap", None]})
    got = noise.recorded(summary, runs)
    assert got["r"].pct == 1.5 and got["r"].cov == 40.0 and "moving-block bootstrap" in got["r"].text
    assert got["g"].pct == 0.5  # the GPU's compute time is the headline where measured
    assert noise.from_stats({("latency", "median"): (1.0, "ms")}) is None  # recorded before median_noise existed

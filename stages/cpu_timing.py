"""Timing loop for work that runs on the host (ONNX Runtime's CPU provider, torch on CPU).

Same rules as trtexec, on the host clock: warm-up by time (its iterations are not counted), then at least
`min_iterations` AND at least `duration_s`, one timing per iteration, throughput over the whole timed span.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

from stages import api, timing_tables
from stages.api import Param

METHOD = "host perf_counter around each call"
# The benchmark.* keys a host-timed benchmark stage takes
PARAMS = {"warmup_ms": Param(float, min=0), "duration_s": Param(float, min=0), "min_iterations": Param(int, min=1)}


@dataclass
class Measurement:
    times_ms: list[float]
    warmup_iterations: int
    bench_time_s: float


def measure(call: Callable[[], Any], *, warmup_ms: float, duration_s: float, min_iterations: int) -> Measurement:
    clock = time.perf_counter_ns
    warm_end = clock() + int(warmup_ms * 1e6)
    warmup = 0
    while warmup == 0 or clock() < warm_end:  # at least one call: the first one pays lazy initialisation
        call()
        warmup += 1
    times, first = [], clock()
    end = first + int(duration_s * 1e9)
    next_report = first
    while True:
        start = clock()
        call()
        stop = clock()
        times.append((stop - start) / 1e6)
        if len(times) >= min_iterations and stop >= end:
            break
        if stop >= next_report:
            elapsed = (stop - first) / 1e9
            api.report_progress(min(elapsed / duration_s if duration_s else 1.0, len(times) / min_iterations),
                                elapsed, duration_s)
            next_report = stop + 100_000_000
    return Measurement(times, warmup, (stop - first) / 1e9)


def tables(m: Measurement, batch_size: int) -> tuple[dict, dict]:
    """Summary rows, samples (columnar) and the runs-row info for one measurement."""
    out, info = timing_tables.tables([{"latency": m.times_ms}], [m.bench_time_s], batch_size)
    info.update(warmup_iterations=m.warmup_iterations, seconds_timed=m.bench_time_s, timing=METHOD)
    return out, info

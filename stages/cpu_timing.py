"""Timing loop for work that runs on the host (ONNX Runtime's CPU provider, torch on CPU).

Same rules as trtexec, on the host clock: warm-up by time (its iterations are not counted), then at least
`min_iterations` AND at least `duration_s`, one timing per iteration, throughput over the whole timed span.
With `trials` > 1 that timed loop runs `trials` times back to back after the one warm-up: the statistics pool
every trial's iterations, and the spread between the trial medians (`trial_spread`) says how repeatable the
median is, which the spread of single iterations (CoV) does not.

Host measurements take turns: jobs running in parallel on one host (hydra/launcher=parallel, local, several shells)
hold a per-host file lock around warm-up and timing (`exclusive()`, the mechanism of the per-GPU lock,
stages/gpu/lock.py), since two timed loops on one CPU would each measure the other. The row records how long the
job waited for it (`<node>_lock_wait_s`) and when its measurement ran (`<node>_measured_from` / `_to`, UTC).

With `until_stable` (stages/stability.py) each timed loop goes on past the minimum until the medians of its last
windows agree, up to a time limit; the row says whether they did (`stable`, which then decides the unstable verdict)
and after how long (`stable_after_s`). How busy the host was says whether two measurements are comparable
(pipeline/analysis/comparable.py): `cpu_others_pct`, the share of the host's CPU time that other processes took
while this one measured (Linux: /proc/stat's busy time less this process's own), and the 1-minute load average when
the measurement began (`cpu_load`, beside `cpu_count`), which lags by design.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from stages import api, stability, timing_tables
from stages.api import Param

log = logging.getLogger(__name__)

METHOD = "host perf_counter around each call"
# The benchmark.* keys a host-timed benchmark stage takes (trials is optional: a backend written before it had
# trials still validates, and times one loop)
PARAMS = {"warmup_ms": Param(float, min=0), "duration_s": Param(float, min=0), "min_iterations": Param(int, min=1),
          "trials": Param(int, min=1, optional=True), "until_stable": Param(dict, optional=True)}


@dataclass
class Measurement:
    trials: list[list[float]]  # per timed loop, each iteration's ms
    warmup_iterations: int
    bench_times_s: list[float]  # per timed loop, its span
    lock_wait_s: float = 0.0  # waiting for the host lock (another job was measuring)
    span: tuple[str, str] = field(default=("", ""))  # UTC: from the warm-up (lock held) to the last timed call
    stability: list[stability.Outcome] | None = None  # per timed loop, with until_stable
    cpu_load: float | None = None  # 1-minute load average as the measurement began
    cpu_others_pct: float | None = None  # % of the host's CPU time other processes took during the measurement

    @property
    def times_ms(self) -> list[float]:
        return [t for trial in self.trials for t in trial]

    @property
    def bench_time_s(self) -> float:
        return sum(self.bench_times_s)


def measure(call: Callable[[], Any], *, warmup_ms: float, duration_s: float, min_iterations: int,
            trials: int | None = 1, until_stable: dict | None = None) -> Measurement:
    clock = time.perf_counter_ns
    trials = trials or 1
    rule = stability.Rule.from_param(until_stable)
    with exclusive() as waited:
        began, load, before = _now(), _load(), _cpu_use()
        warm_end = clock() + int(warmup_ms * 1e6)
        warmup = 0
        while warmup == 0 or clock() < warm_end:  # at least one call: the first one pays lazy initialisation
            call()
            warmup += 1
        loops = [timed_loop(call, duration_s, min_iterations, k, trials, rule) for k in range(trials)]
        ended, after = _now(), _cpu_use()
    return Measurement([loop.times for loop in loops], warmup, [loop.span_s for loop in loops], waited[0],
                       (began, ended), [loop.stability for loop in loops] if rule else None, load,
                       others_pct(before, after))


def _load() -> float | None:
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):  # not on this platform
        return None


def _cpu_use() -> tuple[float, float, float] | None:
    """(every CPU's busy seconds since boot, this process's CPU seconds, the monotonic clock); None off Linux."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
        ticks = [int(f) for f in fields]
    except (OSError, ValueError):
        return None
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait; steal counts as taken by others
    own = os.times()
    return (sum(ticks[:8]) - idle) / os.sysconf("SC_CLK_TCK"), own.user + own.system, time.monotonic()


def others_pct(before, after) -> float | None:
    """The % of the host's CPU time (all cores) that other processes used between two `_cpu_use()` snapshots."""
    if before is None or after is None or after[2] <= before[2]:
        return None
    others = (after[0] - before[0]) - (after[1] - before[1])
    return min(max(others / ((after[2] - before[2]) * (os.cpu_count() or 1)) * 100, 0.0), 100.0)


def lock_path() -> Path:
    """This host's CPU measurement lock, beside the per-GPU ones (PIPELINE_GPU_LOCK_DIR, else the temp dir); named
    after the host, so that a lock directory shared between hosts still gives one lock per host."""
    from stages.gpu import lock

    return lock.lock_dir() / f"pipeline-cpu-{socket.gethostname() or 'host'}.lock"


@contextlib.contextmanager
def exclusive() -> Iterator[list[float]]:
    """Hold this host's CPU measurement lock for the block; yields [seconds waited for it]."""
    from filelock import FileLock, Timeout

    lock, started = FileLock(lock_path()), time.perf_counter()
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log.info("waiting for the CPU: another job is measuring on this host (%s)", lock.lock_file)
        lock.acquire()
    try:
        yield [time.perf_counter() - started]
    finally:
        lock.release()


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="microseconds")


@dataclass
class Loop:
    times: list[float]     # each iteration's ms
    span_s: float
    stability: stability.Outcome | None = None


def timed_loop(call: Callable[[], Any], duration_s: float, min_iterations: int, k: int = 0, trials: int = 1,
               rule: stability.Rule | None = None, clock: Callable[[], int] = time.perf_counter_ns) -> Loop:
    """One timed loop (trial k of `trials`): at least `min_iterations` AND `duration_s`, and with `rule` until the
    window medians settle or its time limit. `clock` (ns) is the host's, or a simulated one in tests."""
    times, first = [], clock()
    end = first + int(duration_s * 1e9)
    windows = stability.Windows(rule, rule.window_ns(duration_s)) if rule else None
    limit = first + rule.limit_ns(duration_s) if rule else end
    next_report = first
    while True:
        start = clock()
        call()
        stop = clock()
        times.append((stop - start) / 1e6)
        if windows is not None:
            windows.add(stop - first, times[-1])
        if len(times) >= min_iterations and stop >= end and (windows is None or windows.settled or stop >= limit):
            break
        if stop >= next_report:
            elapsed = (stop - first) / 1e9
            done = min(elapsed / duration_s if duration_s else 1.0, len(times) / min_iterations, 1.0)
            api.report_progress((k + done) / trials, k * duration_s + elapsed, trials * duration_s)
            next_report = stop + 100_000_000
    return Loop(times, (stop - first) / 1e9, stability.outcome(windows) if windows is not None else None)


def tables(m: Measurement, batch_size: int) -> tuple[dict, dict]:
    """Summary rows, samples (columnar) and the runs-row info for one measurement (every trial)."""
    settled = stability.info(m.stability) if m.stability else {}
    out, info = timing_tables.tables([{"latency": t} for t in m.trials], m.bench_times_s, batch_size,
                                     stable=settled.get("stable"))
    info.update(settled, cpu_load=m.cpu_load, cpu_count=os.cpu_count(), cpu_others_pct=m.cpu_others_pct,
                warmup_iterations=m.warmup_iterations, seconds_timed=m.bench_time_s, timing=METHOD,
                lock_wait_s=m.lock_wait_s, measured_from=m.span[0], measured_to=m.span[1])
    return out, info

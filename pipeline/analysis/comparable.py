"""Were two runs measured under the same conditions? If not, a difference between them says nothing about the build.

From what each run recorded in its `runs` row: the environment (`env_*`: GPU model, driver, CUDA, the frameworks'
versions, CPU model) and the conditions of its measurement (`<node>_*` from the benchmark stage: the GPU's median SM
clock, its power cap and throttle reasons over the timed span; on the host, the share of the CPU that other processes
took while it measured, else the 1-minute load average as the measurement began, per core). compare and reproduce
print "not comparable: <why>" for a pair that differs.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import pandas as pd

# env_* keys whose difference makes timings incomparable (a version one side lacks was not used by it)
VERSIONS = ("driver", "cuda", "torch", "onnxruntime", "tensorrt")
CLOCK_APART_PCT = 3.0   # median SM clocks further apart than this
CAP_APART_PCT = 1.0     # power caps
# other processes' share of the host's CPU during the measurements, further apart than this: on a shared 2-core
# host, 22 % against 41 % was enough to make one fp32 build 79 % slower (0.066 -> 0.119 ms, ORT on both cores)
OTHERS_APART_PCT = 10.0
# ...or above this on either side: the host was busy, the timed calls waited for a core, and their times say more
# about the scheduler than about the build. Seen on a shared 2-core host (ONNX Runtime on both cores), the same
# build measured twice a minute apart: 0.066 vs 0.119 ms with others at 22 % / 41 %, 0.138 vs 0.223 ms at 27 % / 33 %
BUSY_OTHERS_PCT = 20.0
LOAD_APART = 0.5        # where that share is not recorded: 1-minute load averages per core further apart than this
# runs columns of the benchmark stage's info, whatever the node's name (the `benchmark_` prefix)
_CONDITIONS = {"sm_clock_median_mhz": "sm_clock_mhz", "power_cap_w": "power_cap_w",
               "timed_throttle_reasons": "throttle", "throttle_reasons": "throttle_any",
               "cpu_others_pct": "cpu_others_pct", "cpu_load": "cpu_load", "cpu_count": "cpu_count"}


def conditions(row: Mapping[str, Any]) -> dict[str, Any]:
    """The environment and measurement conditions a runs row recorded (absent ones left out)."""
    out = {k[4:]: _plain(v) for k, v in row.items() if k.startswith("env_") and _plain(v) is not None}
    for column, value in row.items():
        for suffix, name in _CONDITIONS.items():
            if column.endswith("_" + suffix) and _plain(value) is not None:
                out.setdefault(name, _plain(value))
    return out


def differences(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    """Why runs A and B (their runs rows) are not comparable; empty when nothing recorded says so."""
    ca, cb = conditions(a), conditions(b)
    why = []
    if ca.get("gpu") != cb.get("gpu"):
        why.append(f"GPU {ca.get('gpu') or 'none'} vs {cb.get('gpu') or 'none'}")
    if ca.get("cpu") and cb.get("cpu") and ca["cpu"] != cb["cpu"]:
        why.append(f"CPU {ca['cpu']} vs {cb['cpu']}")
    why += [f"{key} {ca[key]} vs {cb[key]}" for key in VERSIONS
            if ca.get(key) is not None and cb.get(key) is not None and str(ca[key]) != str(cb[key])]
    clocks = _floats(ca.get("sm_clock_mhz"), cb.get("sm_clock_mhz"))
    if clocks and _apart_pct(*clocks) > CLOCK_APART_PCT:
        why.append(f"median SM clock {clocks[0]:.0f} vs {clocks[1]:.0f} MHz "
                   f"({_apart_pct(*clocks):.0f}% apart, more than {CLOCK_APART_PCT:g}%)")
    caps = _floats(ca.get("power_cap_w"), cb.get("power_cap_w"))
    if caps and _apart_pct(*caps) > CAP_APART_PCT:
        why.append(f"power cap {caps[0]:.0f} vs {caps[1]:.0f} W")
    throttle = [_reasons(c.get("throttle", c.get("throttle_any"))) for c in (ca, cb)]
    if throttle[0] != throttle[1]:
        why.append(f"throttled by {', '.join(sorted(throttle[0])) or 'nothing'} vs "
                   f"{', '.join(sorted(throttle[1])) or 'nothing'}")
    why += _load(ca, cb)
    return why


def _load(ca: dict, cb: dict) -> list[str]:
    others = _floats(ca.get("cpu_others_pct"), cb.get("cpu_others_pct"))
    if others:
        busy = [f"{v:.0f}% ({side})" for side, v in zip("AB", others) if v > BUSY_OTHERS_PCT]
        if busy:
            return [f"the host was busy: other processes took {' and '.join(busy)} of the CPU while measuring "
                    f"(more than {BUSY_OTHERS_PCT:g}%)"]
        if abs(others[0] - others[1]) > OTHERS_APART_PCT:
            return [f"other processes took {others[0]:.0f}% vs {others[1]:.0f}% of the CPU while measuring"]
        return []
    per_core = [_per_core(c) for c in (ca, cb)]
    if None in per_core:
        return []
    if abs(per_core[0] - per_core[1]) > LOAD_APART:
        return [f"CPU load {ca['cpu_load']:.2g} vs {cb['cpu_load']:.2g} on {int(ca['cpu_count'])} / "
                f"{int(cb['cpu_count'])} cores"]
    return []


def _per_core(c: dict) -> float | None:
    load, cores = _floats(c.get("cpu_load"), c.get("cpu_count")) or (None, None)
    return load / cores if load is not None and cores else None


def _reasons(value) -> frozenset[str]:
    return frozenset(r for r in str(value or "").split(",") if r)


def _floats(a, b) -> tuple[float, float] | None:
    try:
        x, y = float(a), float(b)
    except (TypeError, ValueError):
        return None
    return (x, y) if math.isfinite(x) and math.isfinite(y) else None


def _apart_pct(x: float, y: float) -> float:
    low = min(abs(x), abs(y))
    return abs(x - y) / low * 100 if low else (0.0 if x == y else math.inf)


def _plain(value):
    if value is None or (pd.api.types.is_scalar(value) and pd.isna(value)):
        return None
    return value.item() if hasattr(value, "item") else value


def text(why: list[str]) -> str:
    return "comparable" if not why else "not comparable: " + "; ".join(why)

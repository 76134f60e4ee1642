"""`benchmark.until_stable`: keep timing, in windows, until the median stops moving.

After the usual minimum (benchmark.duration_s AND min_iterations), the timed loop goes on until the medians of the
last `windows` windows of `window_s` lie within `tolerance_pct` of each other ((max - min) / their median), or until
`max_s` of timing. Triton's perf_analyzer does the same with 5 s windows and 3 windows within 10 %; MLPerf sets a
minimum duration. The row records whether the medians settled (`stable`), after how many seconds of timing
(`stable_after_s`), and the spread of the last windows (`window_spread_pct`); `stable` decides the unstable verdict.
The host loop (stages/cpu_timing.py: host clock, per-call wall time) and the GPU harness (stages/gpu/harness.py:
the CUDA event timeline, per-iteration GPU compute time) both follow it.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field

from stages.api import ParamError

KEY = "benchmark.until_stable"


@dataclass(frozen=True)
class Rule:
    windows: int = 3                 # how many of the last windows must agree
    window_s: float | None = None    # default: duration_s / windows
    tolerance_pct: float = 5.0
    max_s: float | None = None       # default: 10 x duration_s

    @classmethod
    def from_param(cls, value: dict | None) -> Rule | None:
        """The rule from the stage parameter, None where it is off (or not given: a config written before it)."""
        if not value:
            return None
        if not isinstance(value, dict) or not isinstance(value.get("enabled", True), bool):
            raise ParamError(f"{KEY} = {value!r}: expected a mapping with enabled: true|false, windows, window_s, "
                             f"tolerance_pct, max_s")
        if not value.get("enabled", True):
            return None
        known = {"enabled", *cls.__dataclass_fields__}
        unknown = sorted(set(value) - known)
        if unknown:
            raise ParamError(f"{KEY}.{unknown[0]}: not a setting; valid: {', '.join(sorted(known))}")
        rule = cls(**{k: v for k, v in value.items() if k != "enabled" and v is not None})
        for key, ok, valid in (("windows", isinstance(rule.windows, int) and rule.windows >= 2, "an integer >= 2"),
                               ("window_s", rule.window_s is None or _positive(rule.window_s), "seconds > 0 or null"),
                               ("tolerance_pct", _positive(rule.tolerance_pct), "a percentage > 0"),
                               ("max_s", rule.max_s is None or _positive(rule.max_s), "seconds > 0 or null")):
            if not ok:
                raise ParamError(f"{KEY}.{key} = {getattr(rule, key)!r}: must be {valid}")
        return rule

    def window_ns(self, duration_s: float) -> int:
        return int((self.window_s or max(duration_s, 1e-3) / self.windows) * 1e9)

    def limit_ns(self, duration_s: float) -> int:
        """Timing stops here, settled or not (never before the minimum duration)."""
        return int(max(self.max_s or 10 * duration_s, duration_s) * 1e9)


def _positive(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


@dataclass
class Windows:
    """The medians of consecutive windows of one timed loop, fed one timing at a time (its end since the start)."""
    rule: Rule
    width_ns: int
    medians: list[float] = field(default_factory=list)
    settled_at_ns: int | None = None
    _current: list[float] = field(default_factory=list)
    _edge: int = 0

    def __post_init__(self):
        self._edge = self.width_ns

    def add(self, t_ns: int, value_ms: float) -> None:
        if t_ns >= self._edge:
            if self._current:  # a call longer than a window leaves it empty: no median of nothing
                self.medians.append(statistics.median(self._current))
                self._current = []
            self._edge += (t_ns - self._edge) // self.width_ns * self.width_ns + self.width_ns
            if self.settled_at_ns is None and self.spread_pct <= self.rule.tolerance_pct:
                self.settled_at_ns = t_ns
            elif self.spread_pct > self.rule.tolerance_pct:
                self.settled_at_ns = None  # it moved again: settled means settled at the end
        self._current.append(value_ms)

    @property
    def spread_pct(self) -> float:
        last = self.medians[-self.rule.windows:]
        if len(last) < self.rule.windows:
            return math.inf
        mid = statistics.median(last)
        return (max(last) - min(last)) / mid * 100 if mid else math.inf

    @property
    def settled(self) -> bool:
        return self.settled_at_ns is not None


@dataclass(frozen=True)
class Outcome:
    stable: bool
    after_s: float | None      # seconds of timing when the window medians agreed
    spread_pct: float          # of the last windows, when timing stopped (inf: fewer windows than needed)


def outcome(w: Windows) -> Outcome:
    return Outcome(w.settled, w.settled_at_ns / 1e9 if w.settled else None, w.spread_pct)


def info(outcomes: list[Outcome]) -> dict:
    """Runs columns for the trials' outcomes: stable only if every trial settled; the slowest trial's time."""
    stable = all(o.stable for o in outcomes)
    spread = max(o.spread_pct for o in outcomes)
    return {"stable": stable,
            "stable_after_s": max(o.after_s for o in outcomes) if stable else None,
            "window_spread_pct": spread if math.isfinite(spread) else None}

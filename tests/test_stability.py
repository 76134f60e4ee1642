"""benchmark.until_stable: the host timing loop against a simulated clock whose calls drift, then settle (or never
do), and the rule's checks."""
from __future__ import annotations

import math

import pytest

from stages import cpu_timing, stability
from stages.api import ParamError


class Host:
    """A simulated host: each call takes latency_ms(t) of simulated time (t in seconds since the start)."""

    def __init__(self, latency_ms):
        self.ns, self.latency_ms = 0, latency_ms
        self.calls = 0

    def clock(self) -> int:
        return self.ns

    def call(self) -> None:
        self.calls += 1
        jitter = 0.02 * ((self.calls * 7919) % 13 - 6) / 6  # deterministic +-2 %
        self.ns += int(self.latency_ms(self.ns / 1e9) * (1 + jitter) * 1e6)


RULE = stability.Rule(windows=3, window_s=0.5, tolerance_pct=2.0, max_s=20.0)


def test_a_drifting_then_settling_host_is_timed_until_it_settles():
    host = Host(lambda t: 1.0 + 0.5 * max(0.0, 1 - t / 4))  # slows by 50 %, recovering linearly over 4 s
    loop = cpu_timing.timed_loop(host.call, 1.0, 10, rule=RULE, clock=host.clock)
    assert loop.stability.stable
    assert 4.0 < loop.stability.after_s < 6.0  # the three 0.5 s windows agree only once the slope has gone
    assert loop.span_s == pytest.approx(loop.stability.after_s, abs=0.01)
    assert loop.stability.spread_pct <= 2.0
    assert len(loop.times) == host.calls


def test_a_host_that_never_settles_stops_at_the_limit_unstable():
    host = Host(lambda t: 1.0 + 0.1 * t)  # ever slower
    loop = cpu_timing.timed_loop(host.call, 1.0, 10, rule=RULE, clock=host.clock)
    assert not loop.stability.stable and loop.stability.after_s is None
    assert loop.span_s == pytest.approx(20.0, abs=0.01)
    assert loop.stability.spread_pct > 2.0
    assert stability.info([loop.stability])["stable"] is False


def test_a_steady_host_stops_at_the_minimum():
    host = Host(lambda t: 1.0)
    loop = cpu_timing.timed_loop(host.call, 2.0, 10, rule=RULE, clock=host.clock)
    assert loop.stability.stable and loop.span_s == pytest.approx(2.0, abs=0.01)
    off = Host(lambda t: 1.0 + 0.5 * max(0.0, 1 - t / 4))
    assert cpu_timing.timed_loop(off.call, 2.0, 10, clock=off.clock).stability is None  # until_stable off
    assert off.ns == pytest.approx(2e9, abs=2e6)


def test_info_takes_the_slowest_trial():
    out = stability.info([stability.Outcome(True, 1.5, 1.0), stability.Outcome(True, 3.0, 0.5)])
    assert out == {"stable": True, "stable_after_s": 3.0, "window_spread_pct": 1.0}
    assert stability.info([stability.Outcome(False, None, math.inf)]) == {
        "stable": False, "stable_after_s": None, "window_spread_pct": None}


def test_the_rule_from_config():
    assert stability.Rule.from_param(None) is None and stability.Rule.from_param({"enabled": False}) is None
    rule = stability.Rule.from_param({"enabled": True, "windows": 4, "window_s": None, "tolerance_pct": 3,
                                      "max_s": None})
    assert rule.window_ns(2.0) == 500_000_000 and rule.limit_ns(2.0) == 20_000_000_000


@pytest.mark.parametrize("value, message", [
    ({"windows": 1}, "benchmark.until_stable.windows = 1: must be an integer >= 2"),
    ({"tolerance_pct": 0}, "benchmark.until_stable.tolerance_pct = 0: must be a percentage > 0"),
    ({"window_s": -1.0}, "benchmark.until_stable.window_s = -1.0: must be seconds > 0 or null"),
    ({"tolerence_pct": 1}, "benchmark.until_stable.tolerence_pct: not a setting"),
    ({"enabled": "no"}, "benchmark.until_stable = {'enabled': 'no'}: expected a mapping with enabled: true|false"),
])
def test_a_bad_setting_is_named(value, message):
    with pytest.raises(ParamError, match=message.replace(".", r"\.").replace("(", r"\(")):
        stability.Rule.from_param({"enabled": True, **value})


def test_the_outcome_lands_in_the_row_and_decides_the_verdict():
    jittery = [1.0, 1.0, 50.0] * 40  # CoV far above 2.5 %: unstable by trtexec's rule
    m = cpu_timing.Measurement([jittery], 3, [0.1], stability=[stability.Outcome(True, 0.1, 0.5)], cpu_load=1.5)
    tables, info = cpu_timing.tables(m, batch_size=1)
    assert info["verdict"] == "stable" and info["stable"] is True and info["stable_after_s"] == 0.1
    assert info["cpu_load"] == 1.5 and info["cpu_count"] >= 1
    stats = {r["stat"]: r["value"] for r in tables["summary"] if r["metric"] == "latency"}
    assert stats["median_low"] <= stats["median"] <= stats["median_high"] and stats["median_noise"] >= 0
    unsettled = cpu_timing.Measurement([jittery], 3, [0.1], stability=[stability.Outcome(False, None, 9.0)])
    assert cpu_timing.tables(unsettled, 1)[1]["verdict"] == "unstable"
    assert cpu_timing.tables(cpu_timing.Measurement([jittery], 3, [0.1]), 1)[1]["verdict"] == "unstable"  # CoV rule


# ------------------------------------------------------------------------------------------------ the GPU harness

class Lane:
    """A simulated harness lane (stages/gpu/harness.py's _Lane, without CUDA): each enqueued inference takes
    latency_ms(t) of GPU time back to back; its events give the span from the trial's first start."""

    def __init__(self, latency_ms):
        self.latency_ms, self.gpu_ms = latency_ms, 0.0
        self.ends: list[tuple[float, float]] = []  # (compute ms, end on the GPU timeline) per issued inference
        self.issued = self.collected = 0
        self.first_ms = self.last_end = 0.0

    def enqueue(self, first: bool) -> None:
        if first:
            self.first_ms = self.gpu_ms
        jitter = 0.02 * ((self.issued * 7919) % 13 - 6) / 6
        took = self.latency_ms(self.gpu_ms / 1e3) * (1 + jitter)
        self.gpu_ms += took
        self.ends.append((took, self.gpu_ms))
        self.issued += 1

    def in_flight(self) -> int:
        return self.issued - self.collected

    def collect(self) -> dict[str, float]:
        took, self.last_end = self.ends[self.collected]
        self.collected += 1
        return {"gpu_compute": took, "enqueue": 0.01, "latency": took}

    def span_ms(self) -> float:
        return self.last_end - self.first_ms


def gpu_settings(**kw):
    from stages.gpu import harness

    return harness.Settings(**{"duration_s": 1.0, "min_iterations": 10, **kw})


def test_the_gpu_harness_times_a_drifting_gpu_until_it_settles():
    from stages.gpu import harness

    drifting = Lane(lambda t: 1.0 + 0.5 * max(0.0, 1 - t / 4))  # a clock ramping up over 4 s
    trial = harness._timed_loop([drifting], gpu_settings(), RULE)
    assert trial.stability.stable and 4.0 < trial.stability.after_s < 6.0
    assert trial.bench_time_ms / 1e3 == pytest.approx(trial.stability.after_s, abs=0.01)
    assert trial.stability.spread_pct <= 2.0 and len(trial.times["gpu_compute"]) == drifting.issued

    never = Lane(lambda t: 1.0 + 0.1 * t)
    trial = harness._timed_loop([never], gpu_settings(), RULE)
    assert not trial.stability.stable and trial.bench_time_ms == pytest.approx(20_000, abs=5)

    off = Lane(lambda t: 1.0 + 0.5 * max(0.0, 1 - t / 4))
    trial = harness._timed_loop([off], gpu_settings())  # until_stable off: trtexec's minimum only
    assert trial.stability is None and trial.bench_time_ms == pytest.approx(1000, abs=5)


def test_the_gpu_outcome_lands_in_the_row_and_decides_the_verdict(monkeypatch):
    """harness.run with until_stable from the benchmark params, then measured.stage_result: the same columns and
    verdict as the host loop's."""
    from stages.gpu import harness, measured

    made = []

    class Simulated(Lane):
        def __init__(self, workload, settings):
            super().__init__(workload)
            made.append(self)

        def prepare(self):
            return None

        def close(self):
            pass

    class Monitor:
        rows: list = []

        def summary(self):
            return {}

    monkeypatch.setattr(harness, "_Lane", Simulated)
    monkeypatch.setattr(harness, "_warm_up", lambda lanes, s: 1)
    params = dict(warmup_ms=0, duration_s=1.0, min_iterations=10, trials=2, cuda_graph=False, sync="spin",
                  data_transfers=False, until_stable={"enabled": True, "windows": 3, "window_s": 0.5,
                                                      "tolerance_pct": 2.0, "max_s": 20.0})
    m = harness.run([lambda t: 1.0 + 0.5 * max(0.0, 1 - t / 4)], harness.Settings.from_params(params))
    info = measured.stage_result(m, Monitor(), 1).info
    assert info["stable"] is True and info["verdict"] == "stable"
    assert info["stable_after_s"] == max(t.stability.after_s for t in m.trials) and info["window_spread_pct"] <= 2.0

    m = harness.run([lambda t: 1.0 + 0.1 * t], harness.Settings.from_params(params))
    info = measured.stage_result(m, Monitor(), 1).info
    assert info["stable"] is False and info["verdict"] == "unstable" and info["stable_after_s"] is None

    with pytest.raises(ParamError, match="benchmark.until_stable.windows = 1"):
        harness.run([lambda t: 1.0], harness.Settings.from_params({**params, "until_stable": {"windows": 1}}))
    assert len(made) == 2  # the bad rule is named before any lane (CUDA stream) is made
    off = {k: v for k, v in params.items() if k != "until_stable"}
    m = harness.run([lambda t: 1.0], harness.Settings.from_params(off))  # a config recorded before until_stable
    assert "stable" not in measured.stage_result(m, Monitor(), 1).info

"""Timings of a measurement (CPU loop or GPU harness) into `summary` rows, `samples` columns and runs info."""
from __future__ import annotations

import statistics

from stages import timing_stats


def tables(trials: list[dict[str, list[float]]], bench_times_s: list[float], batch_size: int,
           streams: int = 1, stable: bool | None = None) -> tuple[dict, dict]:
    """`trials`: per trial, metric -> per-iteration ms. Statistics pool every counted iteration of every trial;
    throughput is all queries over all timed spans; the spread between trial medians shows repeatability.

    The headline median's 95 % interval (timing_stats.median_interval: over the trial medians, or a block bootstrap
    of the one trial) lands in `summary` as `median_low` / `median_high` (ms) and its half-width as `median_noise`
    (%), the noise select and compare weigh a difference against. `stable` (benchmark.until_stable's outcome, where
    it ran) decides the unstable verdict in place of the CoV of single iterations."""
    metrics = list(trials[0])
    pooled = {m: [v for t in trials for v in t[m]] for m in metrics}
    stats = {m: timing_stats.describe(v) for m, v in pooled.items()}
    n = len(pooled[metrics[0]])
    rate = timing_stats.throughput(n, batch_size, sum(bench_times_s))
    summary = timing_stats.summary_rows(stats) + [
        {"metric": "throughput", "stat": "qps", "value": rate["qps"], "unit": "qps"},
        {"metric": "throughput", "stat": "samples_per_s", "value": rate["samples_per_s"], "unit": "samples/s"},
    ]
    headline = "gpu_compute" if "gpu_compute" in stats else "latency"
    info: dict = {"iterations": n, "trials": len(trials),
            "verdict": timing_stats.verdict_label(timing_stats.verdicts(stats, streams=streams, stable=stable))}
    if len(trials) > 1 or len(trials[0][headline]) > 1:
        noise = timing_stats.median_interval([t[headline] for t in trials])
        summary += [{"metric": headline, "stat": "median_low", "value": noise.low, "unit": "ms"},
                    {"metric": headline, "stat": "median_high", "value": noise.high, "unit": "ms"},
                    {"metric": headline, "stat": "median_noise", "value": noise.half_width_pct, "unit": "%"}]
        info.update(noise_pct=noise.half_width_pct, noise_method=noise.method)
    else:  # benchmark.min_iterations=1 with no time to spare: a median of one has no interval
        info["noise_method"] = "none: one timing"
    if len(trials) > 1:
        medians = [statistics.median(t[headline]) for t in trials]
        spread = (max(medians) - min(medians)) / statistics.median(medians) * 100
        summary += [{"metric": headline, "stat": f"median_trial{i}", "value": v, "unit": "ms"}
                    for i, v in enumerate(medians)]
        summary.append({"metric": headline, "stat": "trial_spread", "value": spread, "unit": "%"})
        info["trial_spread_pct"] = spread
    return {"summary": summary, "samples": samples(trials)}, info


def samples(trials: list[dict[str, list[float]]]) -> dict[str, list]:
    """The `samples` table (columnar): every iteration of every trial and metric."""
    out: dict[str, list] = {"trial": [], "iteration": [], "metric": [], "value_ms": []}
    for trial, per_metric in enumerate(trials):
        for metric, values in per_metric.items():
            out["trial"] += [trial] * len(values)
            out["iteration"] += list(range(len(values)))
            out["metric"] += [metric] * len(values)
            out["value_ms"] += list(values)
    return out

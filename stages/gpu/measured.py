"""A harness measurement, and what NVML saw meanwhile, as a stage result: every GPU backend reports alike."""
from __future__ import annotations

from stages import flops as flop_counter
from stages import stability, timing_tables
from stages.api import StageResult
from stages.gpu import costs, harness, peaks


def stage_result(m: harness.Measurement, monitor, batch_size: int, *, flops: int | None = None,
                 gpu: str | None = None, dtype: str | None = None, info: dict | None = None,
                 rows: list[dict] | None = None, memory: dict | None = None) -> StageResult:
    """`summary`/`samples` from the timings, the `gpu` table from the monitor, runs info from both; with
    `flops`, achieved TFLOP/s and the % of `gpu`'s dense peak for `dtype`; the energy of the timed span where the
    monitor marked it (a harness hook), and the backend's own cost `rows` (memory, artifact sizes). `memory`: an
    allocator's figures over the timed span (allocated, reserved, graph_pools: bytes), cross-checked with what NVML
    saw at its end (costs.peak_memory). Where the harness ran until_stable, whether each trial's window medians
    agreed decides the unstable verdict, as on the host (stages/stability.py)."""
    outcomes = [t.stability for t in m.trials if t.stability is not None]
    settled = stability.info(outcomes) if outcomes else {}
    tables, out = timing_tables.tables([t.times for t in m.trials], [t.bench_time_ms / 1e3 for t in m.trials],
                                       batch_size, streams=m.streams, stable=settled.get("stable"))
    out.update(settled)
    out.update(warmup_iterations=m.warmup_iterations, cuda_graph=m.cuda_graph, graph_note=m.graph_note,
               streams=m.streams, sync=m.sync, data_transfers=m.data_transfers, timing="cuda events (harness)")
    out.update(monitor.summary())
    out.update(info or {})
    tables["gpu"] = monitor.rows
    if flops:
        median = next(r["value"] for r in tables["summary"] if (r["metric"], r["stat"]) == ("gpu_compute", "median"))
        tables["summary"] += flop_counter.efficiency_rows(flops, median, peaks.peak_tflops(gpu, dtype or ""),
                                                          peaks.SOURCE)
    tables["summary"] += energy(m, monitor, batch_size, out) + list(rows or [])
    used, scope = getattr(monitor, "memory_used", (None, None))
    if memory is not None or used is not None:
        memory = memory or {}
        memory_rows, memory_info = costs.peak_memory(memory.get("allocated"), memory.get("reserved"),
                                                     memory.get("graph_pools"), used, scope)
        tables["summary"] += memory_rows
        out.update(memory_info)
    return StageResult(info=out, tables=tables)


def energy(m: harness.Measurement, monitor, batch_size: int, out: dict) -> list[dict]:
    """The timed span's energy rows (and runs info: its method, the span's throttle reasons), with the power cap."""
    rows = []
    cap = getattr(monitor, "power_cap_w", None)
    if cap:
        rows.append(costs.row("power", "cap", cap, "W"))
    spent = monitor.energy() if hasattr(monitor, "energy") else None
    if hasattr(monitor, "timed_throttle_reasons"):
        out["timed_throttle_reasons"] = monitor.timed_throttle_reasons()
    if not spent:
        return rows
    inferences = sum(len(t.times["gpu_compute"]) for t in m.trials)
    latencies = [x for t in m.trials for x in t.times["latency"]]
    mean_ms = sum(latencies) / len(latencies) if latencies else None
    out["energy_method"] = spent["method"]
    out["energy_span_s"] = spent["span_s"]
    if mean_ms:
        out.update(costs.energy_check(spent["energy_j"], spent["span_s"], inferences, mean_ms, m.streams))
    return rows + costs.energy_rows(spent["energy_j"], spent["span_s"], inferences, batch_size, mean_ms)

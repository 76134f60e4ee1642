"""A harness measurement, and what NVML saw meanwhile, as a stage result: every GPU backend reports alike."""
from __future__ import annotations

from stages import flops as flop_counter
from stages import timing_tables
from stages.api import StageResult
from stages.gpu import harness, peaks


def stage_result(m: harness.Measurement, monitor, batch_size: int, *, flops: int | None = None,
                 gpu: str | None = None, dtype: str | None = None, info: dict | None = None) -> StageResult:
    """`summary`/`samples` from the timings, the `gpu` table from the monitor, runs info from both; with
    `flops`, achieved TFLOP/s and the % of `gpu`'s dense peak for `dtype`."""
    tables, out = timing_tables.tables([t.times for t in m.trials], [t.bench_time_ms / 1e3 for t in m.trials],
                                       batch_size, streams=m.streams)
    out.update(warmup_iterations=m.warmup_iterations, cuda_graph=m.cuda_graph, graph_note=m.graph_note,
               streams=m.streams, sync=m.sync, data_transfers=m.data_transfers, timing="cuda events (harness)")
    out.update(monitor.summary())
    out.update(info or {})
    tables["gpu"] = monitor.rows
    if flops:
        median = next(r["value"] for r in tables["summary"] if (r["metric"], r["stat"]) == ("gpu_compute", "median"))
        tables["summary"] += flop_counter.efficiency_rows(flops, median, peaks.peak_tflops(gpu, dtype or ""),
                                                          peaks.SOURCE)
    return StageResult(info=out, tables=tables)

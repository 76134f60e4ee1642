"""Benchmark stage for TensorRT: the engine timed by the cuda-python harness (stages.gpu.harness).

One execution context per inference stream (benchmark.streams), each with its own buffers holding seeded
inputs. The timed loop holds the per-GPU measurement lock, so concurrent jobs never measure each other, and
NVML samples clocks, power and temperature meanwhile (the `gpu` table), so a throttled run shows.
"""
from __future__ import annotations

import logging
from pathlib import Path

from stages import inputs as model_inputs
from stages import timing_tables
from stages.api import StageResult
from stages.gpu import harness
from stages.tensorrt import runtime

VERSION = "1"
OUTPUTS = ()
CACHED = False  # a measurement is an observation: it runs every time
GPU = 0         # CUDA device 0: CUDA_VISIBLE_DEVICES picks the GPU

log = logging.getLogger("pipeline")


def run(inputs: dict, params: dict, out_dir: Path) -> StageResult:
    from stages.gpu import lock, monitor

    built = runtime.Engine(inputs["engine"])
    shapes = built.input_shapes(params["batch_size"])
    feeds = built.random_inputs(shapes, params["seed"] + model_inputs.SEED_BENCHMARK)
    settings = harness.Settings(warmup_ms=params["warmup_ms"], duration_s=params["duration_s"],
                                min_iterations=params["min_iterations"], trials=params["trials"],
                                cuda_graph=params["cuda_graph"], sync=params["sync"],
                                data_transfers=params["data_transfers"])
    lanes = []
    try:
        for _ in range(params["streams"]):
            lanes.append(built.context(shapes))
            lanes[-1].write(feeds)
        with lock.exclusive(GPU), monitor.Monitor(GPU, 0.1) as mon:
            m = harness.run(lanes, settings, on_progress=_progress)
    finally:
        for lane in lanes:
            lane.close()
    tables, info = timing_tables.tables([t.times for t in m.trials], [t.bench_time_ms / 1e3 for t in m.trials],
                                        params["batch_size"], streams=m.streams)
    info.update(warmup_iterations=m.warmup_iterations, cuda_graph=m.cuda_graph, graph_note=m.graph_note,
                streams=m.streams, sync=m.sync, data_transfers=m.data_transfers, timing="cuda events (harness)",
                **built.info(), **mon.summary())
    tables["gpu"] = mon.rows
    return StageResult(info=info, tables=tables)


def _progress(what: str, fraction: float) -> None:
    log.info("benchmark: %s %3.0f%%", what, min(fraction, 1.0) * 100)

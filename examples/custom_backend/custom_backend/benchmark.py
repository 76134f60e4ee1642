"""Benchmark stage: the reference evaluator timed by the pipeline's host timing loop (warm-up by time, at least
min_iterations AND duration_s, trtexec's statistics), on the same seeded inputs as every other backend."""
from __future__ import annotations

from pathlib import Path

from custom_backend import evaluator
from stages import cpu_timing
from stages import inputs as model_inputs
from stages.api import Param, StageResult

VERSION = "1"
OUTPUTS = ()
CACHED = False  # a measurement: it runs every time
PARAMS = {"feeds": Param(dict), "seed": Param(int), "optimized": Param(bool), **cpu_timing.PARAMS}


def run(inputs: dict, params: dict, out_dir: Path) -> StageResult:
    runner = evaluator.Runner(inputs["model"], params["optimized"])
    specs = model_inputs.model_specs(inputs["reference"], params["feeds"])
    feeds = model_inputs.random_inputs(specs, model_inputs.sizes(params["feeds"]),
                                       params["seed"] + model_inputs.SEED_BENCHMARK)
    measurement = cpu_timing.measure(lambda: runner.infer(feeds), warmup_ms=params["warmup_ms"],
                                     duration_s=params["duration_s"], min_iterations=params["min_iterations"],
                                     trials=params.get("trials"))
    tables, info = cpu_timing.tables(measurement, params["feeds"]["batch_size"])
    return StageResult(info=info, tables=tables)

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
PARAMS = {"batch_size": Param(int, min=1), "input_shape": Param(list, optional=True), "seed": Param(int),
          "optimized": Param(bool), **cpu_timing.PARAMS}


def run(inputs: dict, params: dict, out_dir: Path) -> StageResult:
    runner = evaluator.Runner(inputs["model"], params["optimized"])
    specs = model_inputs.with_input_shape(model_inputs.specs_from_onnx(inputs["model"]), params.get("input_shape"))
    feeds = model_inputs.random_inputs(specs, params["batch_size"], params["seed"] + model_inputs.SEED_BENCHMARK)
    measurement = cpu_timing.measure(lambda: runner.infer(feeds), warmup_ms=params["warmup_ms"],
                                     duration_s=params["duration_s"], min_iterations=params["min_iterations"])
    tables, info = cpu_timing.tables(measurement, params["batch_size"])
    return StageResult(info=info, tables=tables)

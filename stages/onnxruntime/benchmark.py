"""Benchmark stage for ONNX Runtime on CPU: time InferenceSession.run on seeded inputs (stages/cpu_timing)."""
from __future__ import annotations

from pathlib import Path

from stages import cpu_timing
from stages import inputs as model_inputs
from stages.api import Param, StageResult
from stages.cpu_timing import PARAMS as CPU_TIMING
from stages.onnxruntime import session

VERSION = "2"  # 2: every input fed from its spec (named axes, value ranges)
OUTPUTS = ()
CACHED = False  # a measurement is an observation: it runs every time
PARAMS = {"feeds": Param(dict), "seed": Param(int), **CPU_TIMING}


def run(inputs: dict, params: dict, out_dir: Path) -> StageResult:
    runner = session.Runner(session.open_built(inputs["model"]), inputs["model"])
    specs = model_inputs.model_specs(inputs["reference"], params["feeds"])
    arrays = runner.cast(model_inputs.random_inputs(specs, model_inputs.sizes(params["feeds"]),
                                                    params["seed"] + model_inputs.SEED_BENCHMARK))
    measurement = cpu_timing.measure(lambda: runner.sess.run(None, arrays), warmup_ms=params["warmup_ms"],
                                     duration_s=params["duration_s"], min_iterations=params["min_iterations"],
                                     trials=params.get("trials"))
    tables, info = cpu_timing.tables(measurement, params["feeds"]["batch_size"])
    return StageResult(info=info, tables=tables)

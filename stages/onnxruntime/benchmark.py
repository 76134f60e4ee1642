"""Benchmark stage for ONNX Runtime on CPU: time InferenceSession.run on seeded inputs (stages/cpu_timing)."""
from __future__ import annotations

from pathlib import Path

from stages import cpu_timing
from stages import inputs as model_inputs
from stages.api import Param, StageResult
from stages.cpu_timing import PARAMS as CPU_TIMING
from stages.onnxruntime import session

VERSION = "1"
OUTPUTS = ()
CACHED = False  # a measurement is an observation: it runs every time
PARAMS = {"batch_size": Param(int, min=1), "input_shape": Param(list, optional=True), "seed": Param(int),
          **CPU_TIMING}


def run(inputs: dict, params: dict, out_dir: Path) -> StageResult:
    sess = session.open_built(inputs["model"])
    specs = model_inputs.with_input_shape(model_inputs.specs_from_onnx(inputs["model"]), params.get("input_shape"))
    feeds = model_inputs.random_inputs(specs, params["batch_size"], params["seed"] + model_inputs.SEED_BENCHMARK)
    measurement = cpu_timing.measure(lambda: sess.run(None, feeds), warmup_ms=params["warmup_ms"],
                                     duration_s=params["duration_s"], min_iterations=params["min_iterations"])
    tables, info = cpu_timing.tables(measurement, params["batch_size"])
    return StageResult(info=info, tables=tables)

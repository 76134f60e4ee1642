"""Validate stage: the converted graph on the reference evaluator against the fp32 export on ONNX Runtime, through
the pipeline's one accuracy path (the same batches and metrics as every other backend)."""
from __future__ import annotations

from pathlib import Path

from custom_backend import evaluator
from stages import accuracy
from stages import inputs as model_inputs
from stages.api import Param, StageResult
from stages.onnxruntime import session

VERSION = "1"
OUTPUTS = ()
CACHED = False
PARAMS = {"feeds": Param(dict), "seed": Param(int), "batches": Param(int, min=1), "optimized": Param(bool)}


def run(inputs: dict, params: dict, out_dir: Path) -> StageResult:
    specs = model_inputs.model_specs(inputs["reference"], params["feeds"])
    batches = model_inputs.validation_batches(specs, model_inputs.sizes(params["feeds"]), params["seed"],
                                              params["batches"])
    candidate = evaluator.Runner(inputs["model"], params["optimized"])
    rows, info = accuracy.evaluate(candidate, session.reference_runner(inputs["reference"]), batches,
                                   "fp32 export on onnxruntime CPU")
    return StageResult(info=info, tables={"accuracy": rows})

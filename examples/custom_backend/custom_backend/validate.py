"""Validate stage: the converted graph on the reference evaluator against the fp32 export on ONNX Runtime, through
the pipeline's one accuracy path (the same batches and metrics as every other backend)."""
from __future__ import annotations

from pathlib import Path

from custom_backend import evaluator
from stages import accuracy, datasets
from stages import inputs as model_inputs
from stages.api import Param, StageResult
from stages.onnxruntime import session

VERSION = "1"
OUTPUTS = ()
CACHED = False
PARAMS = {"feeds": Param(dict), "seed": Param(int), "validation": Param(dict), "optimized": Param(bool)}


def run(inputs: dict, params: dict, out_dir: Path) -> StageResult:
    specs = model_inputs.model_specs(inputs["reference"], params["feeds"])
    batches = datasets.validation(specs, params["feeds"], params["validation"], params["seed"])
    candidate = evaluator.Runner(inputs["model"], params["optimized"])
    rows, info = accuracy.evaluate(candidate, session.reference_runner(inputs["reference"]), batches,
                                   "fp32 export on onnxruntime CPU", params["validation"].get("metric"))
    return StageResult(info=info, tables={"accuracy": rows})

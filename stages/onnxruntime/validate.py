"""Validate stage for ONNX Runtime: the built model against the fp32 export, on the same seeded inputs."""
from __future__ import annotations

from pathlib import Path

from stages import accuracy
from stages import inputs as model_inputs
from stages.api import Param, StageResult
from stages.onnxruntime import session

VERSION = "2"  # 2: one accuracy path (stages/accuracy.py), samples recorded
OUTPUTS = ()
CACHED = False
PARAMS = {"feeds": Param(dict), "seed": Param(int), "batches": Param(int, min=1)}
REFERENCE = "fp32 export on onnxruntime CPU"


def run(inputs: dict, params: dict, out_dir: Path) -> StageResult:
    specs = model_inputs.model_specs(inputs["reference"], params["feeds"])
    batches = model_inputs.validation_batches(specs, model_inputs.sizes(params["feeds"]), params["seed"],
                                              params["batches"])
    candidate = session.Runner(session.open_built(inputs["model"]), inputs["model"])
    rows, info = accuracy.evaluate(candidate, session.reference_runner(inputs["reference"]), batches, REFERENCE)
    return StageResult(info=info, tables={"accuracy": rows})

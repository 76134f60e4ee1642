"""Validate stage for ONNX Runtime: the built model against the fp32 export, on the same seeded inputs."""
from __future__ import annotations

from pathlib import Path

from stages import accuracy, datasets
from stages import inputs as model_inputs
from stages.api import Param, StageResult
from stages.onnxruntime import session

VERSION = "2"  # 2: one accuracy path (stages/accuracy.py), samples recorded
OUTPUTS = ()
CACHED = False
PARAMS = {"feeds": Param(dict), "seed": Param(int), "validation": Param(dict)}
REFERENCE = "fp32 export on onnxruntime CPU"


def run(inputs: dict, params: dict, out_dir: Path) -> StageResult:
    specs = model_inputs.model_specs(inputs["reference"], params["feeds"])
    batches = datasets.validation(specs, params["feeds"], params["validation"], params["seed"])
    candidate = session.Runner(session.open_built(inputs["model"]), inputs["model"])
    rows, info = accuracy.evaluate(candidate, session.reference_runner(inputs["reference"]), batches, REFERENCE,
                                   params["validation"].get("metric"))
    return StageResult(info=info, tables={"accuracy": rows})

"""Validate stage for TensorRT: the engine's outputs against the fp32 export run by ONNX Runtime on the CPU,
on the same seeded inputs (stages.inputs), batch by batch. The engine gets the reference's input values cast
to its own input types, so a converted graph that takes fp16 sees the same numbers, rounded."""
from __future__ import annotations

from pathlib import Path

from stages import accuracy, datasets
from stages import inputs as model_inputs
from stages.api import Param, StageResult
from stages.gpu.cuda import rt
from stages.onnxruntime import session
from stages.onnxruntime.validate import REFERENCE  # the same reference as the onnxruntime backend's
from stages.tensorrt import runtime

VERSION = "2"  # 2: one accuracy path (stages/accuracy.py), samples recorded
OUTPUTS = ()
CACHED = False
PARAMS = {"feeds": Param(dict), "seed": Param(int), "validation": Param(dict)}


class Runner:
    """One execution context of the engine as an accuracy runner: on the GPU, inside the GPU session."""
    on_gpu = True

    def __init__(self, built: runtime.Engine, shapes: dict[str, tuple[int, ...]]):
        self.lane = self.stream = None
        try:
            self.lane = built.context(shapes)
            self.stream = runtime.new_stream()
        except BaseException:
            self.close()
            raise

    def infer(self, feeds: dict) -> dict:
        return self.lane.infer(feeds, self.stream)

    def close(self) -> None:
        if self.lane is not None:
            self.lane.close()
        if self.stream is not None:
            rt().cudaStreamDestroy(self.stream)
        self.lane = self.stream = None


def run(inputs: dict, params: dict, out_dir: Path) -> StageResult:
    specs, sizes = model_inputs.model_specs(inputs["reference"], params["feeds"]), model_inputs.sizes(params["feeds"])
    batches = datasets.validation(specs, params["feeds"], params["validation"], params["seed"])
    built = runtime.Engine(inputs["engine"])
    candidate = Runner(built, built.input_shapes(specs, sizes))
    try:
        rows, info = accuracy.evaluate(candidate, session.reference_runner(inputs["reference"]), batches, REFERENCE,
                                       params["validation"].get("metric"))
    finally:
        candidate.close()
    return StageResult(info=info, tables={"accuracy": rows})

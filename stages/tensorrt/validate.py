"""Validate stage for TensorRT: the engine's outputs against the fp32 export run by ONNX Runtime on the CPU,
on the same seeded inputs (stages.inputs), batch by batch. The engine gets the reference's input values cast
to its own input types, so a converted graph that takes fp16 sees the same numbers, rounded."""
from __future__ import annotations

from pathlib import Path

from stages import accuracy
from stages import inputs as model_inputs
from stages.api import Param, StageResult
from stages.gpu.cuda import rt
from stages.onnxruntime import session
from stages.onnxruntime.validate import REFERENCE  # the same reference as the onnxruntime backend's
from stages.tensorrt import runtime

VERSION = "2"  # 2: one accuracy path (stages/accuracy.py), samples recorded
OUTPUTS = ()
CACHED = False
PARAMS = {"batch_size": Param(int, min=1), "input_shape": Param(list, optional=True), "seed": Param(int),
          "batches": Param(int, min=1)}


class Runner:
    """One execution context of the engine as an accuracy runner: on the GPU, inside the GPU session."""
    on_gpu = True

    def __init__(self, built: runtime.Engine, batch_size: int):
        self.lane = self.stream = None
        try:
            self.lane = built.context(built.input_shapes(batch_size))
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
    specs = model_inputs.with_input_shape(model_inputs.specs_from_onnx(inputs["reference"]),
                                          params.get("input_shape"))
    batches = model_inputs.validation_batches(specs, params["batch_size"], params["seed"], params["batches"])
    candidate = Runner(runtime.Engine(inputs["engine"]), params["batch_size"])
    try:
        rows, info = accuracy.evaluate(candidate, session.reference_runner(inputs["reference"]), batches, REFERENCE)
    finally:
        candidate.close()
    return StageResult(info=info, tables={"accuracy": rows})

"""Validate stage for TensorRT: the engine's outputs against the fp32 export run by ONNX Runtime on the CPU,
on the same seeded inputs (stages.inputs), batch by batch. The engine gets the reference's input values cast
to its own input types, so a converted graph that takes fp16 sees the same numbers, rounded."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from stages import accuracy
from stages import inputs as model_inputs
from stages.api import StageResult
from stages.gpu.cuda import rt
from stages.onnxruntime import session
from stages.onnxruntime.validate import REFERENCE  # the same reference as the onnxruntime backend's
from stages.tensorrt import runtime

VERSION = "1"
OUTPUTS = ()
CACHED = False


def run(inputs: dict, params: dict, out_dir: Path) -> StageResult:
    from stages.gpu import lock

    reference = session.open_reference(inputs["reference"])
    specs = model_inputs.with_input_shape(model_inputs.specs_from_onnx(inputs["reference"]),
                                          params.get("input_shape"))
    names = [o.name for o in reference.get_outputs()]
    built = runtime.Engine(inputs["engine"])
    pairs: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {n: [] for n in names}
    batches = [model_inputs.random_inputs(specs, params["batch_size"],
                                          params["seed"] + model_inputs.SEED_VALIDATION + batch)
               for batch in range(params["batches"])]
    got, lane, stream = [], None, None
    try:
        lane = built.context(built.input_shapes(params["batch_size"]))
        stream = runtime.new_stream()
        with lock.exclusive(0):  # GPU work of its own would disturb another job's measurement
            got = [lane.infer(feeds, stream) for feeds in batches]
    finally:
        if lane is not None:
            lane.close()
        if stream is not None:
            rt().cudaStreamDestroy(stream)
    for feeds, outputs in zip(batches, got):  # the CPU reference runs outside the GPU lock
        missing = sorted(set(names) - set(outputs))
        if missing:
            raise RuntimeError(f"the engine has no output {missing} (it has {sorted(outputs)})")
        for name, want in zip(names, reference.run(names, feeds)):
            pairs[name].append((want, outputs[name]))
    rows, info = [], {}
    for name in names:
        metrics = accuracy.compare(*(np.concatenate(side) for side in zip(*pairs[name])))
        rows += accuracy.rows(name, metrics, REFERENCE)
        if name == names[0]:
            info = {k: metrics[k] for k in ("rel_l2_err", "top1_agreement") if k in metrics}
    return StageResult(info=info, tables={"accuracy": rows})

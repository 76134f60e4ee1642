"""A backend that lives outside the pipeline's repository: ONNX's reference evaluator (onnx.reference), a pure
numpy interpreter of ONNX graphs. Slow, but exact to the ONNX spec: a second opinion on what a graph computes.

What makes a package a backend plugin: `OPTIONS` (each `backend.<key>` it takes, typed), `REQUIRES` (what it needs
to run), `HOW_TO_GET`, and `open_runtime`, which opens its build for the pipeline's shared benchmark and validate stages
(stages/runtime.py). Its DAG is conf/backend/custom.yaml.
"""
from stages.api import Param
from stages.availability import Requires

OPTIONS = {"optimized": Param(bool, doc="let the evaluator swap in its faster kernels (Conv as im2col + matmul)")}
REQUIRES = Requires(modules=("onnx",))
HOW_TO_GET = "The custom backend needs onnx (`pip install onnx`), which the pipeline installs anyway."


def open_runtime(inputs: dict, options: dict, work_dir):
    """Its build is the converted graph itself (`inputs`: model, reference), opened by the reference evaluator."""
    from custom_backend.evaluator import ReferenceEvaluator

    return ReferenceEvaluator(inputs["model"], inputs["reference"], options["optimized"])

"""A backend that lives outside the pipeline's repository: ONNX's reference evaluator (onnx.reference), a pure
numpy interpreter of ONNX graphs. Slow, but exact to the ONNX spec: a second opinion on what a graph computes.

What makes a package a backend plugin: `OPTIONS` (each `backend.<key>` it takes, typed), `REQUIRES` (what it needs
to run) and `HOW_TO_GET`. Its stages are the modules beside this file; its DAG is conf/backend/custom.yaml.
"""
from stages.api import Param
from stages.availability import Requires

OPTIONS = {"optimized": Param(bool, doc="let the evaluator swap in its faster kernels (Conv as im2col + matmul)")}
REQUIRES = Requires(modules=("onnx",))
HOW_TO_GET = "The custom backend needs onnx (`pip install onnx`), which the pipeline installs anyway."

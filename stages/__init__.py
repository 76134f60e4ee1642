"""Stage implementations. The orchestrator finds them by name here and imports a module only when used."""
from __future__ import annotations

import importlib
from types import ModuleType

# stage name (as written in a DAG node's `stage:`) -> module implementing it (see stages/api.py)
REGISTRY: dict[str, str] = {
    "export": "stages.export",
    "convert": "stages.convert",
    "build_onnxruntime": "stages.onnxruntime.build",
    "benchmark_onnxruntime": "stages.onnxruntime.benchmark",
    "validate_onnxruntime": "stages.onnxruntime.validate",
    "profile_onnxruntime": "stages.onnxruntime.profile",
    "torch_model": "stages.torch_backend.model",
    "torch_compile": "stages.torch_backend.compile",
    "benchmark_torch": "stages.torch_backend.benchmark",
    "validate_torch": "stages.torch_backend.validate",
    "profile_torch": "stages.torch_backend.profile",
    "build_tensorrt": "stages.tensorrt.build",
    "benchmark_tensorrt": "stages.tensorrt.benchmark",
    "profile_tensorrt": "stages.tensorrt.profile",
    "validate_tensorrt": "stages.tensorrt.validate",
    "build_trtexec": "stages.trtexec.build",
    "benchmark_trtexec": "stages.trtexec.benchmark",
}


def load(stage: str) -> ModuleType:
    return importlib.import_module(REGISTRY[stage])

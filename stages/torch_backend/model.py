"""torch_model stage: the model's weights as a cached artifact (state_dict), so what is compiled and timed is
addressed by content like every other artifact. Built-ins are rebuilt from (name, seed); a factory is called
once here."""
from __future__ import annotations

import json
from pathlib import Path

from stages import models
from stages.api import Param, StageResult, Unsupported, package_version

VERSION = "2"  # 2: a factory's key covers the user modules it imports (models.factory_source_digest)
OUTPUTS = ("weights",)
CACHED = True
PARAMS = {"model": Param(dict), "seed": Param(int)}
WEIGHTS, SPEC = "weights.pt", "spec.json"


def environment(params: dict) -> dict:
    return {"torch": package_version("torch")}


def key_files(params: dict) -> dict:
    model = params["model"]
    return {"model._target_": models.factory_source_digest(model["_target_"])} if model["source"] == "factory" else {}


def instantiate(spec: dict):
    """The nn.Module (fp32, CPU, random or factory weights) that `spec` describes."""
    if spec["source"] == "factory":
        return models.load_factory(spec["_target_"], spec.get("kwargs") or {})
    return models.build_builtin(spec["name"], seed=spec["seed"], num_classes=spec.get("num_classes"))


def run(inputs: dict, params: dict, out_dir: Path) -> StageResult:
    import torch

    model = params["model"]
    if model["source"] == "onnx":
        raise Unsupported("backend=torch needs a torch model (a built-in or model=factory); "
                          "an ONNX file runs on backend=onnxruntime or backend=tensorrt")
    shape = model.get("input_shape") or (models.BUILTIN[model["name"]][0] if model["source"] == "builtin" else None)
    if not shape:
        raise Unsupported("model.input_shape is not set; a factory model needs its per-sample input shape")
    spec = {"source": model["source"], "name": model["name"], "_target_": model.get("_target_"),
            "kwargs": model.get("kwargs") or {}, "num_classes": model.get("num_classes"),
            "seed": params["seed"], "input_shape": list(shape)}
    module = instantiate(spec)
    if model["source"] == "factory":
        models.warn_unkeyed(module, model["_target_"])
    torch.save(module.state_dict(), out_dir / WEIGHTS)
    (out_dir / SPEC).write_text(json.dumps(spec, indent=2))
    return StageResult(outputs={"weights": WEIGHTS},
                       info={"parameters": sum(p.numel() for p in module.parameters())})

"""torch_model stage: the model's weights as a cached artifact (state_dict), so what is compiled and timed is
addressed by content like every other artifact. The model comes from its source (stages/sources.py: built-in,
factory, Hugging Face, timm, torchvision); its input specs and output names are recorded beside the weights."""
from __future__ import annotations

import json
from pathlib import Path

from stages import datasets, sources, targets
from stages import inputs as model_inputs
from stages.api import Param, StageResult, package_version

VERSION = "3"  # 3: every model source, its input specs and output names
OUTPUTS = ("weights",)
CACHED = True
PARAMS = {"model": Param(dict), "seed": Param(int),
          "feeds": Param(dict, keyed=False)}  # sizes are checked here, but change no weights
WEIGHTS, SPEC = "weights.pt", "spec.json"


def environment(params: dict) -> dict:
    return {"torch": package_version("torch"), **sources.provider_versions(params["model"])}


def key_files(params: dict) -> dict:
    model = params["model"]
    return {"model._target_": targets.factory_source_digest(model["_target_"])} if model["source"] == "factory" else {}


def instantiate(spec: dict) -> sources.Built:
    """The model (fp32, CPU, random or factory weights) that a recorded `spec` describes."""
    built = sources.build(spec["model"], spec["seed"], trained=False, sizes=spec.get("sizes"))  # weights: next
    built.specs = model_inputs.loads(spec["inputs"])
    return built


def check_served(outputs: dict, params: dict) -> None:
    """On a hit too, the data (feeds, not in the key) must fit the model before any later stage works."""
    recorded = json.loads((outputs["weights"].parent / SPEC).read_text())
    specs = model_inputs.resolve(model_inputs.loads(recorded["inputs"]), params["feeds"])
    datasets.check_all(params["feeds"], specs)


def run(inputs: dict, params: dict, out_dir: Path) -> StageResult:
    import torch

    model = params["model"]
    sizes = model_inputs.sizes(params["feeds"])
    built = sources.build(model, params["seed"], sizes=sizes)
    if model["source"] == "factory":
        targets.warn_unkeyed(built.module, model["_target_"])
    specs = model_inputs.resolve(built.specs, params["feeds"])
    model_inputs.check_sizes(specs, model_inputs.sizes(params["feeds"]))
    datasets.check_all(params["feeds"], specs)
    torch.save(built.module.state_dict(), out_dir / WEIGHTS)
    spec = {"model": model, "seed": params["seed"], "inputs": model_inputs.dumps(specs),
            "outputs": built.output_names, "sizes": sizes}
    (out_dir / SPEC).write_text(json.dumps(spec, indent=2))
    return StageResult(outputs={"weights": WEIGHTS},
                       info={"parameters": sum(p.numel() for p in built.module.parameters()),
                             "inputs": " ".join(s.name for s in specs), "outputs": ",".join(built.output_names)})

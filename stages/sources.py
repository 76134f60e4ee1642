"""Where a torch model comes from (`model.source`), what its inputs are, and what to call it.

- `builtin`: the pure-torch models of stages/models.py, seeded random weights, offline; one image input.
- `factory`: `model._target_` (a user function returning an nn.Module); its inputs from `model.inputs.<name>.shape`
  (`[batch, sequence]`, `[batch, 3, 224, 224]`), or `model.input_shape` for one float input.
- `hf`: Hugging Face transformers, from a config with seeded random weights (`model.model_type=bert`,
  `model.config.<key>=<value>`: no download) or a saved model (`model.path=DIR`, local files only); `model.task`
  picks the head. Its inputs are those its forward takes for the task, with axes `batch` and `sequence`.
- `timm`, `torchvision`: `model.name` from those packages, random weights; `Unsupported` where they do not import.
Every model is handed on as a module that takes its inputs positionally in spec order (a Hugging Face model is
wrapped to), with the names of its outputs (`flatten`), so exports, compiled graphs and validation all see the same
names.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from stages import inputs as model_inputs
from stages import models, targets
from stages.api import StageInputError, Unsupported, package_version

# model.task -> transformers' Auto class
HF_TASKS = {
    "feature-extraction": "AutoModel",
    "sequence-classification": "AutoModelForSequenceClassification",
    "token-classification": "AutoModelForTokenClassification",
    "masked-lm": "AutoModelForMaskedLM",
    "image-classification": "AutoModelForImageClassification",
}
PROVIDERS = {"hf": "transformers", "timm": "timm", "torchvision": "torchvision"}
_TEXT_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
_EXAMPLE_SIZE = 16  # a named axis's size when tracing an export: 1 would be specialised away


@dataclass
class Built:
    module: Any                       # nn.Module, eval mode, fp32 on CPU; inputs positional in spec order
    specs: list[model_inputs.InputSpec]
    output_names: list[str] = field(default_factory=list)


def model_id(model: dict) -> str:
    """What names the model in every row: `hf:bert`, `timm:vit_base_patch16_224`, `onnx:<file>@<sha256[:12]>`..."""
    source = model.get("source")
    if source == "onnx":
        path = Path(str(model.get("path")))
        try:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
        except OSError:
            digest = "unreadable"
        return f"onnx:{path.name}@{digest}"
    if source == "factory":
        return f"factory:{model.get('_target_')}"
    if source == "hf":
        return f"hf:{model.get('model_type') or Path(str(model.get('path'))).name}"
    return f"{source}:{model.get('name')}"


def provider_versions(model: dict) -> dict[str, str | None]:
    """The version of the package a model comes from (transformers, timm, torchvision): part of its cache key."""
    dist = PROVIDERS.get(model.get("source"))
    if dist:
        return {dist: package_version(dist)}
    if model.get("source") == "builtin" and model.get("name") in models.TRAINED:  # weights from training
        return {"training": models.training_recipe(), "scikit-learn": package_version("scikit-learn")}
    return {}


def build(model: dict, seed: int, trained: bool = True, sizes: dict[str, int] | None = None) -> Built:
    """The model `model` (the `model.*` config) names, with seeded weights where they are random, trained where
    it is a trained built-in (`trained=False`: the architecture only, for weights to be loaded into). Its first
    call (for the output names) sizes the named axes as `sizes` says (the run's), else by `example`'s default."""
    source = model["source"]
    if source in PROVIDERS:
        _require(PROVIDERS[source], source)
    with _seeded(seed):
        if source == "builtin":
            module = models.build_builtin(model["name"], seed=seed, num_classes=model.get("num_classes"))
            if trained and model["name"] in models.TRAINED:
                classes = models.BUILTIN[model["name"]][1]
                if model.get("num_classes") not in (None, classes):
                    raise StageInputError(f"model.num_classes = {model['num_classes']}: {model['name']} is trained "
                                          f"on {classes} classes; leave it unset")
                module = models.train_digits(module, seed)
            built = Built(module, [_image_spec(models.BUILTIN[model["name"]][0])])
        elif source == "factory":
            module = targets.load_factory(model["_target_"], model.get("kwargs") or {})
            built = Built(module, _in_forward_order(module, _factory_specs(model)))
        elif source == "hf":
            built = _hf(model)
        elif source == "timm":
            built = _timm(model)
        elif source == "torchvision":
            built = _torchvision(model)
        else:
            raise Unsupported(f"model.source = {source}: a torch backend needs a torch model (builtin, factory, hf, "
                              f"timm, torchvision); an ONNX file runs on the ONNX backends")
    keywords = [s.name for s in built.specs] if source == "hf" else None
    built.output_names = output_names(built.module, example(built.specs, sizes), keywords)
    if source == "hf":  # by keyword in, a ModelOutput out: wrapped to positional in, a tuple out
        built.module = _keywords_in_tuple_out(built.module, [s.name for s in built.specs])
    return built


def example(specs: list[model_inputs.InputSpec], sizes: dict[str, int] | None = None) -> tuple:
    """Torch tensors to trace or first-call a model with: batch 2, every other named axis at its size in `sizes`
    (the run's: a model that only works at its own length traces there), else _EXAMPLE_SIZE."""
    import torch

    axis_sizes = {axis: (sizes or {}).get(axis, _EXAMPLE_SIZE) for s in specs for axis in s.axes()}
    axis_sizes[model_inputs.BATCH] = 2
    arrays = model_inputs.random_inputs(specs, axis_sizes, seed=0)
    return tuple(torch.from_numpy(arrays[s.name]) for s in specs)


def output_names(module, args: tuple, keywords: list[str] | None = None) -> list[str]:
    """The names of a model's outputs, from one call (by keyword when `keywords` names the arguments)."""
    import torch

    with torch.inference_mode():
        return list(flatten(module(**dict(zip(keywords, args))) if keywords else module(*args)))


def named(out, names: list[str]) -> dict:
    """A call's outputs by the names `output_names` gave them."""
    flat = flatten(out)
    return dict(zip(names, flat.values())) if len(flat) == len(names) else flat


def flatten(out) -> dict:
    """A model's outputs by stable name: one tensor `output`; a tuple or list `output_0`, ...; a dict or a Hugging
    Face ModelOutput by its keys."""
    if hasattr(out, "keys") and hasattr(out, "__getitem__"):
        return {str(k): out[k] for k in out.keys()}
    if isinstance(out, (tuple, list)):
        return {f"output_{i}": o for i, o in enumerate(out)}
    return {"output": out}


# --------------------------------------------------------------------------- per source


def _image_spec(shape) -> model_inputs.InputSpec:
    return model_inputs.InputSpec("input", (model_inputs.BATCH, *shape), np.dtype(np.float32))


def _factory_specs(model: dict) -> list[model_inputs.InputSpec]:
    declared = model.get("inputs") or {}
    if declared:
        return [model_inputs.declared(name, settings or {}, f"model.inputs.{name}")
                for name, settings in declared.items()]
    if not model.get("input_shape"):
        raise StageInputError("model.input_shape is not set: a factory model declares its inputs, either "
                              "model.input_shape=[3,224,224] (one float input) or model.inputs.<name>.shape="
                              "[batch,sequence] (and .dtype, .range) for each input")
    return [_image_spec(model["input_shape"])]


def _in_forward_order(module, specs: list[model_inputs.InputSpec]) -> list[model_inputs.InputSpec]:
    """Declared inputs in the order the model's forward takes them; a name it does not take is refused."""
    import inspect

    signature = inspect.signature(module.forward).parameters.values()
    if len(specs) == 1 or any(p.kind is p.VAR_POSITIONAL for p in signature):
        return specs  # one input, or *args: nothing to match by name
    names = [p.name for p in signature if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    unknown = [s.name for s in specs if s.name not in names]
    if unknown:
        raise StageInputError(f"model.inputs.{unknown[0]}: the model's forward takes no '{unknown[0]}'; it takes "
                              f"{', '.join(names)}")
    return sorted(specs, key=lambda s: names.index(s.name))


def _hf(model: dict) -> Built:
    import transformers

    task = model.get("task") or "feature-extraction"
    if task not in HF_TASKS:
        raise StageInputError(f"model.task = '{task}': valid: {', '.join(HF_TASKS)}")
    auto = getattr(transformers, HF_TASKS[task])
    if model.get("path"):
        path = Path(model["path"])
        if not (path / "config.json").is_file():
            raise StageInputError(f"model.path = '{path}': not a saved transformers model (no config.json in it)")
        module = auto.from_pretrained(str(path), local_files_only=True)
    else:
        if not model.get("model_type"):
            raise StageInputError("model.model_type is not set: model=hf needs model.model_type=bert (built from its "
                                  "config with random weights) or model.path=DIR (a saved model)")
        try:
            config = transformers.AutoConfig.for_model(model["model_type"], **(model.get("config") or {}))
        except (ValueError, KeyError) as err:
            raise StageInputError(f"model.model_type = '{model['model_type']}': {err}") from None
        module = auto.from_config(config)
    return Built(module.eval(), _hf_specs(module, task))


def _hf_specs(module, task: str) -> list[model_inputs.InputSpec]:
    import inspect

    config = module.config
    if task == "image-classification" or "pixel_values" in inspect.signature(module.forward).parameters:
        size = config.image_size if isinstance(config.image_size, int) else config.image_size[0]
        dims = (model_inputs.BATCH, getattr(config, "num_channels", 3), size, size)
        return [model_inputs.InputSpec("pixel_values", dims, np.dtype(np.float32))]
    takes = inspect.signature(module.forward).parameters
    specs = []
    for name in _TEXT_INPUTS:
        if name not in takes:
            continue
        dims, dtype = (model_inputs.BATCH, "sequence"), np.dtype(np.int64)
        if name == "attention_mask":
            specs.append(model_inputs.InputSpec(name, dims, dtype, values="mask"))
        else:
            rows = config.vocab_size if name == "input_ids" else getattr(config, "type_vocab_size", None)
            if rows:
                specs.append(model_inputs.InputSpec(name, dims, dtype, values="integers", low=0, high=rows))
    return specs


def _timm(model: dict) -> Built:
    import timm

    module = timm.create_model(model["name"], pretrained=False, num_classes=model.get("num_classes") or 1000)
    shape = tuple(module.pretrained_cfg.get("input_size", (3, 224, 224)))
    return Built(module.eval(), [_image_spec(shape)])


def _torchvision(model: dict) -> Built:
    import torchvision

    kwargs = {"num_classes": model["num_classes"]} if model.get("num_classes") else {}
    module = torchvision.models.get_model(model["name"], weights=None, **kwargs)
    return Built(module.eval(), [_image_spec(tuple(model.get("input_shape") or (3, 224, 224)))])


def _require(module: str, source: str) -> None:
    try:
        __import__(module)
    except Exception as err:  # noqa: BLE001 - not installed, or its compiled ops do not load against this torch
        raise Unsupported(f"model={source} needs {module}, which does not import here ({type(err).__name__}: "
                          f"{str(err).splitlines()[0][:200]}); `pip install {module}` built for this torch") from None


@contextlib.contextmanager
def _seeded(seed: int):
    """Seed torch's CPU generator for a model's random init; the caller's generator state is given back after."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.random.default_generator.manual_seed(seed)
        yield


@functools.lru_cache(maxsize=1)
def _adapter_class():
    import torch

    class KeywordsInTupleOut(torch.nn.Module):
        """A model that takes its inputs by keyword, called with them in spec order, returning its outputs as a
        tuple in a stable order (a Hugging Face ModelOutput's keys)."""

        def __init__(self, model, names: list[str]):
            super().__init__()
            self.model, self.names = model, names

        def forward(self, *args):
            return tuple(flatten(self.model(**dict(zip(self.names, args)))).values())

    return KeywordsInTupleOut


def _keywords_in_tuple_out(module, names: list[str]):
    return _adapter_class()(module, names).eval()

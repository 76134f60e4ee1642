"""Where error grows, torch: the output of every leaf module of the converted model against the fp32 model's, on the
same inputs (validate.data where given, else seeded batches), into the `layer_errors` table (stages/layer_errors.py
is the ONNX backends' counterpart; the columns are the same).

Both models are the eager modules the build starts from: the fp32 one and a copy put in the point's precision
(fp16 / bf16: cast; int8 / fp8: cast to bf16 and quantized by its torchao recipe, backend.keep_high_precision
honoured, as stages/torch_backend/build.py does). Forward hooks on the reference's leaf modules, matched by qualified
name, record each module's input and output; a compiled build fuses the modules away, so the eager converted model
is the proxy, as the ONNX side runs its converted graph unfused. A module called more than once is compared per call
(`tensor`: `name#2`, ...). `quantized` marks a module whose weight torchao replaced (a tensor subclass).
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

from stages import datasets
from stages import inputs as model_inputs
from stages.api import Param, StageResult
from stages.layer_errors import Sums
from stages.torch_backend import compile as compile_stage
from stages.torch_backend import model, precision, quantize, tensors

VERSION = "1"
OUTPUTS = ()
CACHED = False
PARAMS = {"precision": Param(str), "feeds": Param(dict), "seed": Param(int), "validation": Param(dict),
          "threshold": Param(float, min=0, doc="relative error that marks the first layer past it"),
          "calibration": Param(dict, optional=True, doc="convert.calibration: static recipes' activation scales")}
BACKEND_OPTIONS = ("device", "quantization", "keep_high_precision", "isolate_measurements")
crash_prone = compile_stage.crash_prone  # in a child process where the backend's measurements are (on CUDA)
# The precision planner's key (pipeline/run/planner.py): where a point lists the modules it keeps in high precision,
# the names this stage reports; the first is the override, the rest where a resolved config holds it too.
PLAN_KEEP = ("backend.keep_high_precision",)


def run(inputs: dict, params: dict, out_dir: Path) -> StageResult:
    import torch

    device, recipe = compile_stage.plan(params)  # Unsupported where the point cannot run here (a recipe on CPU)
    spec = json.loads((Path(inputs["weights"]).parent / model.SPEC).read_text())
    built = model.instantiate(spec)
    reference = built.module
    reference.load_state_dict(torch.load(inputs["weights"], map_location="cpu", weights_only=True))
    reference = reference.eval().to(device)
    dtype = precision.torch_dtype(params["precision"])
    specs = model_inputs.resolve(built.specs, params["feeds"])
    calibrate = (compile_stage._calibrator(specs, params, device, dtype)
                 if recipe and quantize.RECIPES[recipe].static else None)
    with precision.scoped("fp32"):  # true fp32 for the reference, whatever the point's math mode
        converted, info = convert(reference, params["precision"], recipe,
                                  params.get("keep_high_precision", quantize.DEFAULT_KEEP), device, calibrate)
        batches = (feeds for feeds, _, _ in
                   datasets.validation(specs, params["feeds"], params["validation"], params["seed"]))
        rows, found = compare(reference, converted, batches, params["threshold"], device, dtype)
    return StageResult(info={**found, **info}, tables={"layer_errors": rows})


def convert(reference, precision_name: str, recipe: str | None, keep, device: str, calibrate=None):
    """A copy of the fp32 `reference` in the point's precision, quantized by `recipe` where there is one; and what
    the recipe records."""
    converted = copy.deepcopy(reference).to(device=device, dtype=precision.torch_dtype(precision_name))
    info = quantize.apply(converted, recipe, keep, calibrate) if recipe else {}
    return converted.eval(), info


def leaves(module) -> list[str]:
    """Qualified names of the modules without children (the root itself for a model of one module)."""
    return [name for name, m in module.named_modules() if not any(True for _ in m.children())]


def compare(reference, converted, batches, threshold: float, device: str, dtype) -> tuple[list[dict], dict]:
    """Rows of the `layer_errors` table, in the order the reference's leaf modules first run (their depth), and the
    run's info. Per call of a leaf module of `reference` with a twin of the same name in `converted`: the relative L2
    error and cosine of its output against the reference's, its NaN/Inf, the relative error of what it was handed
    (`input_rel_err`), whether its weight is quantized, and `first_over` on the first row whose error passes
    `threshold` (or that holds NaN/Inf). `batches` yields feeds (name -> array); each model takes them in its own
    dtype (`dtype`: the converted model's float inputs)."""
    import torch

    names = leaves(reference)
    twins = {n: converted.get_submodule(n) for n in names if _has(converted, n)}
    outputs: dict[str, Sums] = {}
    handed: dict[str, Sums] = {}
    order: list[tuple[str, str]] = []  # (module, tensor) in the order of the reference's calls
    kinds: dict[str, str] = {}
    for feeds in batches:
        seen = _calls(reference, twins, tensors.place(feeds, device, torch.float32))
        got: dict[str, list] = {}
        for name, run_in, run_out in _calls(converted, twins, tensors.place(feeds, device, dtype)):
            got.setdefault(name, []).append((run_in, run_out))
        calls: dict[str, int] = {}
        for name, ref_in, ref_out in seen:
            i = calls[name] = calls.get(name, -1) + 1
            tensor = name if i == 0 else f"{name}#{i + 1}"
            mine = got.get(name, [])
            if i >= len(mine) or not ref_out:
                continue
            if tensor not in outputs:
                outputs[tensor], handed[tensor] = Sums(), Sums()
                order.append((name, tensor))
                kinds[name] = type(reference.get_submodule(name)).__name__
            run_in, run_out = mine[i]
            for ref, out in zip(ref_out, run_out):
                outputs[tensor].add(ref, out)
            for ref, out in zip(ref_in, run_in):
                handed[tensor].add(ref, out)
    rows, first = [], None
    for depth, (name, tensor) in enumerate(order):
        s = outputs[tensor]
        row = {"layer": name, "tensor": tensor, "op_type": kinds[name], "depth": depth, "rel_err": s.rel_err,
               "cosine": s.cosine, "max_abs_err": s.max_abs, "nan": s.nan, "inf": s.inf,
               "input_rel_err": handed[tensor].rel_err,
               "quantized": any(quantize._is_quantized(m) for m in twins[name].modules()),
               "qdq_nodes": "", "first_over": False}
        if first is None and (row["rel_err"] > threshold or s.nan or s.inf):
            row["first_over"], first = True, name
        rows.append(row)
    unmatched = [n for n in names if n not in twins]
    info = {"layers": len(rows), "first_over": first, "threshold": threshold, "unmatched": len(unmatched),
            "unmatched_names": ",".join(unmatched[:20]) or None,
            "extra_tensors": len(set(leaves(converted)) - set(names))}
    return rows, info


def _has(module, name: str) -> bool:
    try:
        module.get_submodule(name)
    except AttributeError:
        return False
    return True


def _floats(value) -> list:
    """The floating-point tensors in a hook's args or output, as float64 numpy arrays (nested tuples, lists, dicts
    and ModelOutput-like objects flattened in order)."""
    import torch

    if isinstance(value, torch.Tensor):
        return [value.detach().to(torch.float64).cpu().numpy()] if value.is_floating_point() else []
    if isinstance(value, dict):
        value = list(value.values())
    elif hasattr(value, "to_tuple"):
        value = value.to_tuple()
    if isinstance(value, (list, tuple)):
        return [a for v in value for a in _floats(v)]
    return []


def _calls(module, names, args: tuple) -> list[tuple[str, list, list]]:
    """(name, inputs, outputs) of every call of `module`'s submodules named in `names` during `module(*args)`, in the
    order they ran (forward hooks, removed after)."""
    import torch

    calls: list[tuple[str, list, list]] = []
    handles = [module.get_submodule(n).register_forward_hook(
        lambda mod, inputs, output, n=n: calls.append((n, _floats(inputs), _floats(output)))) for n in names]
    try:
        with torch.inference_mode():
            module(*args)
    finally:
        for h in handles:
            h.remove()
    return calls

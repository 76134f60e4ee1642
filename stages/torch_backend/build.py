"""torch_build stage: the torch build as a cached artifact, an AOTInductor package (`model.pt2`).

It loads the weights, puts the model in its precision and memory format, applies the torchao recipe (calibrating a
static one on convert.calibration, as the in-process path does), exports it (`torch.export`: the named axes as
dynamic dims where the recipe allows, else the run's static sizes), compiles it ahead of time with AOTInductor
(`torch._inductor.aoti_compile_and_package`, with the compile mode's Inductor settings), loads the package back and
checks its outputs against the eager (quantized) model before publishing it. The package is a self-contained
shared library plus its weights: the benchmark, validate and profile stages open it (`aoti_load_package`, through
stages/torch_backend/opened.py) and never see the Python model. On CPU it is compiled by the system C++ compiler, on
a GPU with Triton kernels for that GPU.

`build.json` beside it says what was built (`path`: aoti) or why not: `path: compile` with the `reason`, where
torch.export or AOTInductor cannot handle the model or recipe (or backend.build=compile); the compile stage
(compile.py) then builds today's in-process torch.compile'd callable, so no point is lost. backend.compile=eager
builds nothing here (`path: eager`). The cache key holds everything that changes the package (key_extra,
environment, key_files): a warm re-run serves it and compiles nothing.
"""
from __future__ import annotations

import copy
import json
import time
from pathlib import Path

from stages import child, datasets, host, targets
from stages import flops as flop_counter
from stages import inputs as model_inputs
from stages.api import Param, StageInputError, StageResult, file_sha256, package_version
from stages.gpu import costs
from stages.torch_backend import compile as compile_stage
from stages.torch_backend import model, package, precision, quantize, tensors

VERSION = "1"
OUTPUTS = ("build",)
CACHED = True
FILE, PACKAGE = package.FILE, package.PACKAGE
PATHS = ("aoti", "compile")  # backend.build
PARAMS = {**compile_stage.PARAMS, "model": Param(dict, doc="the model's spec (in the key beside its weights)")}
# backend.build (aoti: a package, or compile) and the options that change what is built
BACKEND_OPTIONS = ("channels_last", "device", "quantization", "keep_high_precision", "build")
# backend.compile -> the Inductor settings AOTInductor compiles with (torch.compile's modes, as settings)
INDUCTOR = {"default": {}, "max-autotune": {"max_autotune": True}}
# the package's outputs against the eager model's, relative L2 error, by the dtype it computes in
TOLERANCE = {"fp32": 1e-4, "tf32": 1e-2}
LOW_TOLERANCE = 5e-2


def inductor_settings(params: dict, recipe: str | None) -> dict:
    return {**INDUCTOR.get(params["mode"], {}), **(quantize.INDUCTOR if recipe else {})}


def dynamic(recipe: str | None) -> bool:
    """Named axes as dynamic dims: not under a torchao recipe, whose tensor subclasses export at static sizes."""
    return recipe is None


def environment(params: dict) -> dict:
    import torch

    device = compile_stage.resolve_device(params["device"])
    env = {"torch": package_version("torch"), "torchao": package_version("torchao"),
           "triton": package_version("triton", "pytorch-triton"), "cuda": torch.version.cuda, "device": device}
    if device == "cuda" and torch.cuda.is_available():
        env.update(gpu=torch.cuda.get_device_name(), compute_capability=list(torch.cuda.get_device_capability()))
    else:
        env.update(host.cpu_identity())
    return env


def key_files(params: dict) -> dict:
    out = {}
    if params["model"].get("source") == "factory":
        out["model._target_"] = targets.factory_source_digest(params["model"]["_target_"])
    recipe = _recipe(params)
    data = (params.get("calibration") or {}).get("data")
    if recipe and quantize.RECIPES[recipe].static and data:
        out["convert.calibration.data"] = datasets.digest(data)
    return out


def key_extra(params: dict) -> dict:
    """What the params decide only once resolved: the recipe, the Inductor settings, static or dynamic shapes, the
    calibration actually used, the layers kept in high precision."""
    recipe = _recipe(params)
    extra = {"recipe": recipe, "inductor": inductor_settings(params, recipe),
             "shapes": "dynamic" if dynamic(recipe) else "static"}
    if recipe:
        extra["keep_high_precision"] = _kept_layers(params)
        if quantize.RECIPES[recipe].static:
            extra["calibration"] = {**compile_stage.CALIBRATION, **(params.get("calibration") or {})}
    return extra


def _recipe(params: dict) -> str | None:
    return quantize.resolve(params["precision"], params.get("quantization") or "auto")


def _kept_layers(params: dict) -> list[str]:
    from stages import sources

    built = sources.build(params["model"], params["seed"], trained=False,
                          sizes=model_inputs.sizes(params["feeds"]))
    return quantize.select(built.module, params.get("keep_high_precision", quantize.DEFAULT_KEEP)).kept


# On CUDA the build runs in a child process of its own: an AOTInductor build of tiny_cnn (bf16, fp16; torch 2.11,
# CUDA 13) once segfaulted there and took the whole sweep with it. A crash is then this point's fallback, with the
# signal and the Python frame it died in, and the parent's CUDA context is never touched by the build.
CRASH_LOG = "build_crash.txt"  # the child's faulthandler output, beside build.json


def run(inputs: dict, params: dict, out_dir: Path) -> StageResult:
    device, recipe = compile_stage.plan(params)
    mode = params["mode"]
    if mode == "eager":
        return _publish(out_dir, {"path": "eager", "reason": "backend.compile=eager: the eager model runs in-process"})
    if params["build"] == "compile":
        return _publish(out_dir, {"path": "compile", "reason": "backend.build=compile"})
    args = (inputs, params, out_dir, device, recipe)
    if not in_child(device):
        return _build_scoped(*args)
    try:
        return child.call(_guarded, (_build_scoped, *args))
    except child.Crashed as err:
        (out_dir / PACKAGE).unlink(missing_ok=True)
        where = _crash_frame(out_dir / CRASH_LOG)
        return _publish(out_dir, {"path": "compile", "reason": f"the AOTInductor build {err}{where} in its own "
                                                               f"process: the in-process torch.compile path runs"})


def in_child(device: str) -> bool:
    return device == "cuda"


def _crash_frame(log: Path) -> str:
    """`, in <function> (<file>:<line>)`: the innermost Python frame of a faulthandler dump, where there is one."""
    for line in (log.read_text(errors="replace").splitlines() if log.exists() else []):
        line = line.strip()
        if line.startswith("File "):  # 'File "path", line N in func', innermost first
            path, _, rest = line[len("File "):].partition(", line ")
            number, _, func = rest.partition(" in ")
            return f", in {func} ({Path(path.strip(chr(34))).name}:{number})"
    return ""


def _guarded(step, inputs: dict, params: dict, out_dir: Path, device: str, recipe: str | None) -> StageResult:
    """In the child: the build step with faulthandler writing where a crash happened to CRASH_LOG (removed when
    the step returns or raises)."""
    import faulthandler

    log = Path(out_dir) / CRASH_LOG
    with open(log, "w") as dump:
        faulthandler.enable(dump)
        try:
            return step(inputs, params, out_dir, device, recipe)
        finally:  # returned or raised: no crash to tell of
            faulthandler.disable()
            log.unlink()


def _build_scoped(inputs: dict, params: dict, out_dir: Path, device: str, recipe: str | None) -> StageResult:
    """The build under the compile mode's Inductor settings and the precision's math mode, set explicitly and for
    this build only (torchao's quantize_ runs with set_inductor_config=False, quantize.py)."""
    settings = inductor_settings(params, recipe)
    with precision.scoped(params["precision"], settings):
        return _build(inputs, params, out_dir, device, recipe, settings)


def _build(inputs: dict, params: dict, out_dir: Path, device: str, recipe: str | None, settings: dict) -> StageResult:
    import torch

    dtype = precision.torch_dtype(params["precision"])
    spec = json.loads((Path(inputs["weights"]).parent / model.SPEC).read_text())
    built = model.instantiate(spec)
    module = built.module
    module.load_state_dict(torch.load(inputs["weights"], map_location="cpu", weights_only=True))
    module = module.eval().to(device=device, dtype=dtype)
    if params["channels_last"]:
        module = module.to(memory_format=torch.channels_last)
    sizes = model_inputs.sizes(params["feeds"])
    example = tensors.seeded(built.specs, sizes, params["seed"], device, dtype, params["channels_last"])
    batch = params["feeds"]["batch_size"]
    flops = flop_counter.count_torch(module, example) if device == "cuda" or batch <= 8 else None
    info: dict = {"quantization": quantize.label(recipe)}
    if recipe:
        started = time.perf_counter()
        calibrate = (compile_stage._calibrator(built.specs, params, device, dtype)
                     if quantize.RECIPES[recipe].static else None)
        info.update(quantize.apply(module, recipe, params.get("keep_high_precision", quantize.DEFAULT_KEEP),
                                   calibrate))
        info["quantize_s"] = time.perf_counter() - started
    meta = {"device": device, "dtype": params["precision"], "specs": model_inputs.dumps(built.specs),
            "output_names": spec["outputs"], "channels_last": params["channels_last"], "flops": flops,
            "batch_size": batch, "quantization": quantize.label(recipe), "mode": params["mode"], "inductor": settings,
            "weights_bytes": quantize.module_bytes(module)}
    rows = [costs.artifact_row("weights_file", costs.file_bytes(inputs["weights"]))]
    try:
        info.update(_aoti(module, built.specs, example, settings, recipe, params["precision"], out_dir, meta))
    except Fallback as why:
        (out_dir / PACKAGE).unlink(missing_ok=True)
        meta.update(path="compile", reason=str(why))
        return _publish(out_dir, meta, info, rows)
    meta["path"] = "aoti"
    meta["package_sha256"] = file_sha256(out_dir / PACKAGE)
    rows += [costs.artifact_row("package", costs.file_bytes(out_dir / PACKAGE)),
             costs.memory_row("weights", meta["weights_bytes"])]
    if device == "cuda":  # the build's own process (a child): the model, its eager check and the package's
        rows.append(costs.memory_row("peak_build", torch.cuda.max_memory_allocated()))
    return _publish(out_dir, meta, info, rows)


class Fallback(Exception):
    """torch.export or AOTInductor cannot build this model or recipe: the message says why (the row's reason)."""


def _why(step: str, err: BaseException) -> str:
    first = (str(err).strip().splitlines() or [""])[0][:300]
    return f"{step} failed: {type(err).__name__}: {first}"


def _aoti(module, specs: list, example: tuple, settings: dict, recipe: str | None, precision_name: str,
          out_dir: Path, meta: dict) -> dict:
    import torch

    info: dict = {}
    with torch.no_grad():
        reference = [o.float().cpu() for o in _flat(copy.deepcopy(module)(*example))]
    started = time.perf_counter()
    program, shapes = _export(module, specs, example, recipe)
    info.update(export_s=time.perf_counter() - started, shapes=shapes)
    meta["shapes"] = shapes
    started = time.perf_counter()
    try:
        path = torch._inductor.aoti_compile_and_package(program, package_path=str(out_dir / PACKAGE),
                                                        inductor_configs=settings)
    except Exception as err:  # noqa: BLE001 - any compile failure: the in-process path runs the point
        raise Fallback(_why("AOTInductor", err)) from None
    info["aoti_compile_s"] = time.perf_counter() - started
    loaded = torch._inductor.aoti_load_package(path)
    with torch.inference_mode():
        got = [o.float().cpu() for o in _flat(loaded(*example))]
    error = max(float((g - r).norm() / r.norm().clamp_min(1e-12)) for g, r in zip(got, reference))
    limit = TOLERANCE.get(precision_name, LOW_TOLERANCE)
    if len(got) != len(reference) or not error <= limit:
        raise Fallback(f"the package's outputs differ from the eager model's (relative L2 {error:.3g} > {limit})")
    info["package_rel_l2_err"] = error
    info["package_mib"] = Path(path).stat().st_size / costs.MIB
    return info


def _export(module, specs: list, example: tuple, recipe: str | None):
    """The exported program and its shapes: dynamic (named axes) where the recipe allows and export accepts them,
    else static."""
    import torch

    attempts = []
    if dynamic(recipe) and any(isinstance(d, str) for s in specs for d in s.dims):
        attempts.append("dynamic")
    attempts.append("static")
    failure = None
    for shapes in attempts:
        dims = _dynamic_shapes(specs) if shapes == "dynamic" else None
        try:
            return torch.export.export(module, example, dynamic_shapes=dims), shapes
        except Exception as err:  # noqa: BLE001 - what export refuses decides the path, with its reason
            failure = failure or err
    raise Fallback(_why("torch.export", failure))


def _dynamic_shapes(specs: list) -> tuple:
    import torch

    dims: dict[str, object] = {}
    out = []
    for s in specs:
        out.append({i: dims.setdefault(d, torch.export.Dim(_identifier(d), min=1, max=65536))
                    for i, d in enumerate(s.dims) if isinstance(d, str)} or None)
    return tuple(out)


def _identifier(name: str) -> str:
    cleaned = "".join(c if c.isalnum() else "_" for c in name)
    return cleaned if cleaned[:1].isalpha() else f"axis_{cleaned}"


def _flat(out) -> list:
    import torch

    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        return [v for v in out.values() if isinstance(v, torch.Tensor)]
    if isinstance(out, (list, tuple)):
        return [t for o in out for t in _flat(o)]
    if hasattr(out, "to_tuple"):
        return _flat(out.to_tuple())
    raise StageInputError(f"the model returns a {type(out).__name__}: expected tensors")


def _publish(out_dir: Path, meta: dict, info: dict | None = None, rows: list | None = None) -> StageResult:
    (out_dir / FILE).write_text(json.dumps(meta, indent=2))
    info = {**(info or {}), "path": meta["path"], "reason": meta.get("reason")}
    return StageResult(outputs={"build": FILE}, info={k: v for k, v in info.items() if v is not None},
                       tables={"summary": rows or []})

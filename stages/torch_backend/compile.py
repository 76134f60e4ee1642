"""torch_compile stage: load the weights, put the model on its device in its precision, quantize it (int8 / fp8:
a torchao recipe, stages/torch_backend/quantize.py), and make the callable that is timed (eager, or torch.compile).
It runs in-process: see compiled.py. Where the build stage (build.py) made an AOTInductor package, this stage
builds nothing: its output points at the package, which the measuring stages open; it is the fallback where
torch.export or AOTInductor cannot handle the model or recipe (the build's `reason`), and the eager path.

torch.compile's caches (FX graph, AOT autograd, autotuning, Triton kernels) live under cache.dir/shared/torchinductor
(inductor.py), so a warm re-run compiles from them; the row says whether it did (`compile_inductor_cache`: hit,
miss, partial).
Besides its runs columns the stage writes `summary` rows of what the build costs (stages/gpu/costs.py): the weights
file's size, what the model takes in memory, and on a GPU the peak memory while it was built and first called.
"""
from __future__ import annotations

import contextlib
import copy
import json
import time
from pathlib import Path

from stages import datasets
from stages import flops as flop_counter
from stages import inputs as model_inputs
from stages.api import Param, StageResult, Unsupported
from stages.gpu import costs
from stages.torch_backend import compiled, inductor, model, package, precision, quantize, tensors

VERSION = "2"  # 2: int8/fp8 recipes, compile caches, cost rows
OUTPUTS = ("compiled",)
CACHED = False
FILE = "compiled.json"
# backend.compile -> torch.compile's mode (None: its default). Graphs are the harness's job (benchmark.cuda_graph:
# one CUDA graph around the whole call), so max-autotune is asked for without its own graphs. `reduce-overhead` is
# left out on purpose: all it adds over `default` is torch.compile's own CUDA graphs (cudagraph trees), which the
# harness's graph already gives; and a cudagraph-tree callable cannot be captured inside another graph, so with
# benchmark.cuda_graph on it would only fall back to plain enqueue.
MODES = {"default": None, "max-autotune": "max-autotune-no-cudagraphs"}
CALIBRATION = {"method": "max", "samples": 64, "data": None}  # convert.calibration's defaults
# `mode` is backend.compile under the name recorded configs hash it by; the backend's other options are handed over
# by the runner (typed once, in stages/torch_backend/__init__.py OPTIONS)
PARAMS = {"precision": Param(str), "mode": Param(str, choices=tuple(MODES) + ("eager",), doc="backend.compile"),
          "feeds": Param(dict), "seed": Param(int),
          "calibration": Param(dict, optional=True, doc="convert.calibration: static recipes' activation scales")}
BACKEND_OPTIONS = ("channels_last", "device", "quantization", "keep_high_precision", "isolate_measurements")


def resolve_device(requested: str) -> str:
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise Unsupported("backend.device=cuda: torch sees no CUDA device here (valid: auto, cpu)")
    return requested


def plan(params: dict) -> tuple[str, str | None]:
    """(device, recipe) for these params, or Unsupported / ParamError naming why they cannot run here; before any
    model is built."""
    import torch

    name = params["precision"]
    recipe = quantize.resolve(name, params.get("quantization") or "auto")
    quantize.check_keep(params.get("keep_high_precision", list(quantize.DEFAULT_KEEP)))
    device = resolve_device(params["device"])
    if name == "tf32" and device == "cpu":
        raise Unsupported("precision=tf32: TF32 is a tensor-core math mode of NVIDIA GPUs; torch on CPU "
                          "computes plain fp32 (use precision=fp32)")
    precision.torch_dtype(name)
    if recipe:
        quantize.check_runnable(recipe, device, torch.cuda.get_device_capability() if device == "cuda" else None)
        method = (params.get("calibration") or CALIBRATION).get("method", "max")
        if quantize.RECIPES[recipe].static and method != "max":
            raise Unsupported(f"backend.quantization={recipe} with convert.calibration.method={method}: the torch "
                              f"backend's static recipes calibrate by max (the largest |activation| seen); "
                              f"use convert.calibration.method=max")
    return device, recipe


def measured_in_child(options: dict) -> bool:
    """backend.isolate_measurements (see stages/torch_backend/__init__.py measure_isolated)."""
    choice = options.get("isolate_measurements", "auto")
    if choice != "auto":
        return choice == "always"
    device = options.get("device", "auto")
    if device != "auto":
        return device == "cuda"
    import torch

    return torch.cuda.is_available()


def run(inputs: dict, params: dict, out_dir: Path) -> StageResult:
    device, recipe = plan(params)
    compiled.release()  # the previous job's model, compiled graphs and cached GPU blocks
    built_as = package.read(inputs["build"]) if "build" in inputs else {"path": "eager" if params["mode"] == "eager"
                                                                      else "compile"}
    weights = Path(inputs["weights"]).resolve()
    if built_as["path"] == "aoti":  # the package is the build: the measuring stages open it, no model here
        (out_dir / FILE).write_text(json.dumps({"path": "aoti", "build": str(Path(inputs["build"]).resolve()),
                                                "weights": str(weights)}))
        return StageResult(outputs={"compiled": FILE}, info={"path": "aoti", "device": device, "mode": params["mode"]})
    made, info, rows = make(weights, built_as["path"], params)
    compiled.register(made, out_dir / FILE, {"weights": str(weights), "path": built_as["path"], "params": params})
    return StageResult(outputs={"compiled": FILE}, info={k: v for k, v in info.items() if v is not None},
                       tables={"summary": rows})


def crash_prone(params: dict) -> bool:
    """Where the measurements run in child processes (backend.isolate_measurements) so does this stage: the parent
    never holds the model nor touches the GPU; each measuring child builds the callable again (Inductor's cache, which
    this stage filled, serves its compile)."""
    return measured_in_child(params)


def make(weights: Path, build_path: str, params: dict) -> tuple[compiled.Compiled, dict, list[dict]]:
    """The timed callable of the in-process path (eager, or torch.compile'd, after its first call), its info and
    cost rows: in the compile stage, or in a measuring stage of another process (opened.open_compiled)."""
    import torch

    name = params["precision"]
    device, recipe = plan(params)
    dtype = precision.torch_dtype(name)
    spec = json.loads((weights.parent / model.SPEC).read_text())
    built = model.instantiate(spec)
    module = built.module
    module.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    module.eval()
    reference = compiled.on_device(copy.deepcopy(module), device)  # fp32, moved to the GPU when validation calls it
    gpu = device == "cuda"
    if gpu:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    module = module.to(device=device, dtype=dtype)
    if params["channels_last"]:
        module = module.to(memory_format=torch.channels_last)
    precision.apply_math_mode(name)
    sizes = model_inputs.sizes(params["feeds"])
    example = tensors.seeded(built.specs, sizes, params["seed"], device, dtype, params["channels_last"])
    batch = params["feeds"]["batch_size"]
    # counted on the model before quantization: what the work is (a tensor subclass would hide its matmuls)
    flops = flop_counter.count_torch(module, example) if gpu or batch <= 8 else None
    info: dict = {"quantization": quantize.label(recipe)}
    if recipe:
        started = time.perf_counter()
        calibrate = _calibrator(built.specs, params, device, dtype) if quantize.RECIPES[recipe].static else None
        info.update(quantize.apply(module, recipe, params.get("keep_high_precision", quantize.DEFAULT_KEEP),
                                   calibrate))
        info["quantize_s"] = time.perf_counter() - started
    mode = params["mode"]
    fn, patch, before = module, contextlib.nullcontext(), None
    if mode != "eager":
        info["cache_dir"] = inductor.use_shared_cache()
        # (compiled.release() reset dynamo: every job compiles afresh, no earlier job's recompile budget in the way)
        before = inductor.snapshot()
        fn = torch.compile(module, mode=MODES[mode], dynamic=False)
        if recipe:  # torchao's recommended inductor settings, for this compile only
            patch = torch._inductor.config.patch(quantize.INDUCTOR)
            info["inductor_config"] = "torchao recommended: " + ", ".join(quantize.INDUCTOR)
    started = time.perf_counter()
    with patch, torch.inference_mode():  # the first call compiles; later calls must hit the same guards
        fn(*example)
    if gpu:
        torch.cuda.synchronize()
    compile_s = time.perf_counter() - started
    if before is not None:
        info.update(inductor.delta(before, inductor.snapshot()))
    weights_bytes = quantize.module_bytes(module)
    rows = [costs.artifact_row("weights_file", costs.file_bytes(weights)), costs.memory_row("weights", weights_bytes)]
    if gpu:
        rows.append(costs.memory_row("peak_build", torch.cuda.max_memory_allocated()))
        info["peak_build_mib"] = torch.cuda.max_memory_allocated() / costs.MIB
    made = compiled.Compiled(fn, reference, device, name, built.specs, spec["outputs"], params["channels_last"],
                             flops, batch, quantize.label(recipe), weights_bytes, build_path)
    info.update({"path": build_path, "device": device, "mode": mode,
                 "torch_mode": (MODES.get(mode) or mode) if mode != "eager" else None,
                 "dtype": str(dtype).removeprefix("torch."), "first_call_s": compile_s, "flops": flops,
                 "weights_mib": weights_bytes / costs.MIB})
    if gpu:
        info["gpu"] = torch.cuda.get_device_name()
    return made, info, rows




def _calibrator(specs: list, params: dict, device: str, dtype):
    def calibrate(run) -> int:
        import torch

        fed = 0
        with torch.no_grad():  # not inference_mode: observers keep what they see in ordinary tensors
            settings = {**CALIBRATION, **(params.get("calibration") or {})}
            batch = model_inputs.sizes(params["feeds"])[model_inputs.BATCH]  # the run's batch, as it will run
            for arrays in datasets.calibration(specs, params["feeds"], settings, params["seed"], batch):
                run(*tensors.place(arrays, device, dtype, params["channels_last"]))
                fed += len(next(iter(arrays.values())))
        return fed
    return calibrate


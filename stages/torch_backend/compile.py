"""torch_compile stage: load the weights, put the model on its device in its precision, and make the
callable that is timed (eager, or torch.compile). It runs in-process: see compiled.py."""
from __future__ import annotations

import copy
import json
import time
from pathlib import Path

from stages import flops as flop_counter
from stages import inputs as model_inputs
from stages.api import Param, StageResult, Unsupported
from stages.torch_backend import compiled, model, precision, tensors

VERSION = "1"
OUTPUTS = ("compiled",)
CACHED = False
FILE = "compiled.json"
# Graphs are the harness's job (benchmark.cuda_graph), so max-autotune is asked for without its own graphs.
MODES = {"default": None, "max-autotune": "max-autotune-no-cudagraphs"}
PARAMS = {"precision": Param(str), "mode": Param(str, choices=tuple(MODES) + ("eager",)),
          "channels_last": Param(bool), "device": Param(str, choices=("auto", "cuda", "cpu")),
          "feeds": Param(dict), "seed": Param(int)}


def resolve_device(requested: str) -> str:
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise Unsupported("backend.device=cuda: torch sees no CUDA device here (valid: auto, cpu)")
    return requested


def run(inputs: dict, params: dict, out_dir: Path) -> StageResult:
    import torch

    name = params["precision"]
    dtype = precision.torch_dtype(name)
    device = resolve_device(params["device"])
    if name == "tf32" and device == "cpu":
        raise Unsupported("precision=tf32: TF32 is a tensor-core math mode of NVIDIA GPUs; torch on CPU "
                          "computes plain fp32 (use precision=fp32)")
    spec = json.loads((Path(inputs["weights"]).parent / model.SPEC).read_text())
    built = model.instantiate(spec)
    module = built.module
    module.load_state_dict(torch.load(inputs["weights"], map_location="cpu", weights_only=True))
    module.eval()
    reference = copy.deepcopy(module).to(device)
    module = module.to(device=device, dtype=dtype)
    if params["channels_last"]:
        module = module.to(memory_format=torch.channels_last)
    precision.apply_math_mode(name)
    sizes = model_inputs.sizes(params["feeds"])
    example = tensors.seeded(built.specs, sizes, params["seed"], device, dtype, params["channels_last"])
    batch = params["feeds"]["batch_size"]
    flops = flop_counter.count_torch(module, example) if device == "cuda" or batch <= 8 else None
    mode = params["mode"]
    fn = module if mode == "eager" else torch.compile(module, mode=MODES[mode], dynamic=False)
    started = time.perf_counter()
    with torch.inference_mode():  # the first call compiles; later calls must hit the same guards
        fn(*example)
    if device == "cuda":
        torch.cuda.synchronize()
    compile_s = time.perf_counter() - started
    compiled.register(compiled.Compiled(fn, reference, device, name, built.specs, spec["outputs"],
                                        params["channels_last"], flops, batch), out_dir / FILE)
    info = {"device": device, "mode": mode, "dtype": str(dtype).removeprefix("torch."), "first_call_s": compile_s,
            "flops": flops}
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name()
    return StageResult(outputs={"compiled": FILE}, info=info)

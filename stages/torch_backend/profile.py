"""Where the time goes in a torch build, from torch.profiler, into the `layers` table (the shared profile stage asks
the opened build: stages/torch_backend/opened.py).

It runs after (never inside) the timed benchmark: the profiler's bookkeeping slows every call. Rows:
- one per operator (layer_type "operator"): the top-level ops of each call, with the device time of the
  kernels they launched on a GPU (host time on CPU), so the rows add up to the whole call without counting
  a nested op twice. A torch.compile'd callable on a GPU is one opaque top-level region, so there the rows
  are its kernels instead (layer_type "kernel": Inductor's fused Triton kernels and library calls); on a
  CPU it stays one "Torch-Compiled Region" row;
- one per module (layer_type "module"): the model's top-level submodules (one level into containers such as
  a Sequential of blocks), timed through record_function ranges opened by forward hooks. Eager mode only:
  a torch.compile'd graph runs no submodule hooks.
Shares are fractions of the operator total. The profiler's own trace is kept as a Chrome trace.
"""
from __future__ import annotations

import contextlib
from collections import defaultdict
from pathlib import Path

from stages import inputs as model_inputs
from stages.torch_backend import compiled, precision, tensors

SOURCE = "torch-profiler"
TRACE_FILE = "torch_trace.json"
_MODULE_PREFIX = "module::"


def layers(c: compiled.Compiled, sizes: dict, seed: int, iterations: int, out_dir: Path) -> tuple[list[dict], dict]:
    """`iterations` profiled calls of the compiled model on seeded inputs (after one warm-up): layers rows, info."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    precision.apply_math_mode(c.dtype)
    x = tensors.seeded(c.specs, sizes, seed + model_inputs.SEED_BENCHMARK, c.device, precision.torch_dtype(c.dtype),
                       c.channels_last)
    gpu = c.device == "cuda"
    # torch.compile's OptimizedModule, or an AOTInductor package: no submodule hooks run
    compiled_graph = hasattr(c.fn, "_orig_mod") or not isinstance(c.fn, torch.nn.Module)
    hooks = [] if compiled_graph else _module_ranges(c.fn)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if gpu else [])
    from stages.gpu import session

    try:
        with session.exclusive() if gpu else contextlib.nullcontext(), torch.inference_mode():
            c.fn(*x)  # warm-up, outside the profile
            with profile(activities=activities) as prof:
                for _ in range(iterations):
                    c.fn(*x)
                if gpu:
                    torch.cuda.synchronize()
    finally:
        for hook in hooks:
            hook.remove()
    prof.export_chrome_trace(str(out_dir / TRACE_FILE))
    rows = (kernel_rows(prof.events(), iterations, c.dtype) if gpu and compiled_graph
            else layer_rows(prof.events(), iterations, gpu, c.dtype))
    return rows, {"iterations": iterations, "layers": len(rows), "trace": TRACE_FILE, "modules": bool(hooks)}


def _module_ranges(model) -> list:
    """Forward hooks that open a record_function range named after each top-level submodule."""
    import torch

    handles = []
    for name, module in _top_modules(model):
        label = f"{_MODULE_PREFIX}{name} ({type(module).__name__})"
        state: dict = {}

        def enter(mod, args, label=label, state=state):
            state["range"] = torch.profiler.record_function(label)
            state["range"].__enter__()

        def leave(mod, args, out, state=state):
            state.pop("range").__exit__(None, None, None)

        handles += [module.register_forward_pre_hook(enter), module.register_forward_hook(leave)]
    return handles


def _top_modules(model) -> list[tuple[str, object]]:
    import torch

    while len(list(model.children())) == 1:  # a wrapper (a Hugging Face model behind its adapter): look inside
        model = next(model.children())
    out = []
    for name, child in model.named_children():
        if isinstance(child, (torch.nn.Sequential, torch.nn.ModuleList)):
            out += [(f"{name}.{sub}", m) for sub, m in child.named_children()]
        else:
            out.append((name, child))
    return out


def layer_rows(events, iterations: int, gpu: bool, dtype: str) -> list[dict]:
    """Operator rows from the top-level ops, module rows from the hook ranges; times per call in ms."""
    time_of = (lambda e: getattr(e, "device_time_total", 0.0)) if gpu else (lambda e: e.cpu_time_total)
    ops: dict[str, float] = defaultdict(float)
    modules: dict[str, float] = defaultdict(float)
    for event in events:
        if _on_device(event):
            continue  # kernels themselves: counted through the op that launched them
        if event.name.startswith(_MODULE_PREFIX):
            modules[event.name[len(_MODULE_PREFIX):]] += time_of(event)
        elif not _has_op_parent(event):
            ops[event.name] += time_of(event)
    total = sum(ops.values()) or 1.0
    rows = [_row(name, "operator", us, iterations, total, dtype) for name, us in ops.items() if us > 0]
    rows.sort(key=lambda r: -r["time_ms"])
    rows += [_row(name, "module", us, iterations, total, dtype) for name, us in modules.items()]
    return rows


def kernel_rows(events, iterations: int, dtype: str) -> list[dict]:
    """One row per GPU kernel name: its device time per call, and its share of all kernel time."""
    per_kernel: dict[str, float] = defaultdict(float)
    for event in events:  # the kernels are events on the device timeline (Triton launches have no aten op)
        if _on_device(event):
            per_kernel[event.name] += event.time_range.elapsed_us()
    total = sum(per_kernel.values()) or 1.0
    rows = [_row(name, "kernel", us, iterations, total, dtype) for name, us in per_kernel.items() if us > 0]
    return sorted(rows, key=lambda r: -r["time_ms"])


def _on_device(event) -> bool:
    return "CUDA" in str(getattr(event, "device_type", ""))


def _has_op_parent(event) -> bool:
    parent = event.cpu_parent
    while parent is not None:
        if not parent.name.startswith(_MODULE_PREFIX):
            return True
        parent = parent.cpu_parent
    return False


def _row(name: str, kind: str, total_us: float, iterations: int, total: float, dtype: str) -> dict:
    return {"layer": name, "layer_type": kind, "dtype": dtype, "tactic": "", "stream": 0,
            "time_ms": total_us / iterations / 1000.0, "share": total_us / total, "source": SOURCE}

"""The compiled torch model, opened for the shared stages (stages/runtime.py): host-timed on the CPU, timed by the
GPU harness on CUDA (each inference stream with its own seeded inputs), compared with the fp32 eager model (TF32
off), profiled by torch.profiler.

On a GPU it also reports what the timed loop cost: the memory torch's allocator held while timing (reset when the
timed span starts: the model, its CUDA graph's pool and the loop's activations; the fp32 reference stays on the CPU
until validation), cross-checked with NVML, and the energy NVML counted (stages/gpu/costs.py).
Timing runs under dynamo's error_on_recompile: a compiled callable that would recompile (its guards failing on
what the timed loop feeds it) fails the benchmark instead of silently timing another graph.
"""
from __future__ import annotations

import contextlib
import json
from pathlib import Path

from stages import flops, runtime, sources
from stages import inputs as model_inputs
from stages.gpu import costs, peaks
from stages.torch_backend import compiled, precision, profile, tensors
from stages.torch_backend.workload import TorchWorkload


class Runner:
    """A torch callable as an accuracy runner (stages/accuracy.py): the feeds moved to its device, dtype and memory
    format, its math mode set, its output(s) back as numpy arrays by name."""

    def __init__(self, fn, device: str, precision_name: str, output_names: list[str], channels_last: bool = False):
        self.fn, self.device, self.precision, self.channels_last = fn, device, precision_name, channels_last
        self.output_names = output_names
        self.on_gpu = device == "cuda"

    def infer(self, feeds: dict) -> dict:
        import torch

        precision.apply_math_mode(self.precision)
        args = tensors.place(feeds, self.device, precision.torch_dtype(self.precision), self.channels_last)
        with torch.inference_mode():
            outputs = sources.named(self.fn(*args), self.output_names)
        return {name: out.float().cpu().numpy() for name, out in outputs.items()}

    def close(self) -> None:
        self.fn = None


class TorchRuntime(runtime.Runtime):
    def __init__(self, handle: Path):
        self.c = open_compiled(handle)
        self.device = self.c.device
        self.runner = Runner(self.c.fn, self.c.device, self.c.dtype, self.c.output_names, self.c.channels_last)
        self.on_gpu = self.runner.on_gpu
        self.reference_label = f"fp32 eager torch on {self.c.reference_device or self.c.device}"
        self.memory = PeakMemory()

    def specs(self, feeds: dict) -> list:
        return self.c.specs

    def infer(self, feeds: dict) -> dict:
        return self.runner.infer(feeds)

    def reference(self) -> Runner:
        return Runner(self.c.reference, self.c.reference_device or self.c.device, "fp32",
                      self.c.output_names)  # TF32 off: true fp32

    def call(self, feeds: dict):
        precision.apply_math_mode(self.c.dtype)
        x = tensors.place(feeds, "cpu", precision.torch_dtype(self.c.dtype), self.c.channels_last)
        return lambda: self.c.fn(*x)

    def timing(self):
        precision.apply_math_mode(self.c.dtype)
        return no_recompile()

    def cpu_rows(self, median_ms: float) -> list[dict]:
        return flops.efficiency_rows(self.c.flops, median_ms, None, peaks.SOURCE) if self.c.flops else []

    def lanes(self, specs: list, sizes: dict, seed: int, streams: int) -> list:
        dtype = precision.torch_dtype(self.c.dtype)
        return [TorchWorkload(self.c.fn, tensors.seeded(self.c.specs, sizes, seed + lane, "cuda", dtype,
                                                        self.c.channels_last)) for lane in range(streams)]

    def cuda_graph(self, requested: bool, lanes: list) -> tuple[bool, str]:
        return graph_decision(requested, self.c.build_path, self.c.quantization,
                              lambda: lanes[0].host_sync() if lanes else None)

    def hooks(self) -> tuple:
        return (self.memory,)

    def measured(self, lanes: list) -> dict:
        import torch

        return {"flops": self.c.flops, "gpu": torch.cuda.get_device_name(), "dtype": self.c.dtype,
                "memory": self.memory.figures}

    def info(self) -> dict:
        """Where the in-process callable was built by this measuring stage (in its child process): what that took."""
        return {f"built_here_{k}": v for k, v in self.c.built_here.items()}

    def profile(self, feeds: dict, iterations: int, settings: dict, out_dir: Path):
        return profile.layers(self.c, model_inputs.sizes(feeds), settings["seed"], iterations, out_dir)

    def close(self) -> None:
        self.runner.close()


BUILT_HERE = ("first_call_s", "quantize_s", "inductor_cache", "peak_build_mib")


def open_compiled(handle: Path) -> compiled.Compiled:
    """The compile stage's output, opened: the package, or the callable it registered in this process, or, where it
    ran in another (each in a child: backend.isolate_measurements), the callable built here from the weights and the
    compile stage's params, once per process."""
    if compiled.here(handle):
        return compiled.lookup(handle)
    rebuild = json.loads(Path(handle).read_text())["rebuild"]

    def build() -> compiled.Compiled:
        from stages.torch_backend import compile as compile_stage

        made, info, _ = compile_stage.make(Path(rebuild["weights"]), rebuild["path"], rebuild["params"])
        made.built_here = {k: info[k] for k in BUILT_HERE if info.get(k) is not None}
        return made

    return compiled.built_here(handle, build)


# Recipes whose eager path is known to break a capture: torchao's eager int8 matmul (`safe_int_mm`) formats a CUDA
# tensor into a string, which synchronises with the host and invalidates the capture; the CUDA context was unusable
# afterwards (pytorch/ao#4872). Compiled, the same recipes capture (the probe checks).
EAGER_UNSAFE = "torchao:"
CAPTURED = "captured: benchmark.cuda_graph=true and one call under torch's sync debug mode did not synchronise"


def graph_decision(requested: bool, build_path: str, quantization: str, probe) -> tuple[bool, str]:
    """Whether the benchmark captures a CUDA graph, and why (or why not), decided before any capture: an invalidated
    capture can leave the CUDA context unusable for the points after it. In order: benchmark.cuda_graph=false; an
    eager torchao recipe (EAGER_UNSAFE: known to synchronise); else `probe()`, one call under torch's sync debug
    mode, which returns why the callable cannot be captured (it synchronises with the host) or None."""
    if not requested:
        return False, "benchmark.cuda_graph=false"
    if build_path == "eager" and quantization.startswith(EAGER_UNSAFE):
        return False, (f"not captured: eager {quantization}: torchao's eager path may synchronise with the host "
                       f"inside the call (its int8 matmul does, pytorch/ao#4872), which a CUDA graph capture forbids")
    why_not = probe()
    return (False, why_not) if why_not else (True, CAPTURED)


@contextlib.contextmanager
def no_recompile():
    """Inference mode, with dynamo's error_on_recompile for the block (restored after it): a recompile inside the
    timed loop would time another graph than the one built, under whatever Inductor settings are current then."""
    import torch

    with torch._dynamo.config.patch(error_on_recompile=True), torch.inference_mode():
        yield


class PeakMemory:
    """A harness hook: torch's allocator over the timed span (reset when it starts, after the capture): its peak
    allocated and reserved memory, and what CUDA graphs' private pools hold (inside reserved: a replay allocates
    nothing, so the allocated peak alone misses a graph's intermediates)."""

    def __init__(self):
        self.figures: dict | None = None

    def timed_start(self) -> None:
        import torch

        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()

    def timed_end(self) -> None:
        import torch

        torch.cuda.synchronize()
        self.figures = {"allocated": torch.cuda.max_memory_allocated(), "reserved": torch.cuda.max_memory_reserved(),
                        "graph_pools": costs.graph_pool_bytes(torch.cuda.memory_snapshot())}

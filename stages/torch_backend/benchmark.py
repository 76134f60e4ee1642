"""benchmark_torch stage: the compiled callable timed by the GPU harness (CUDA) or the host loop (CPU).

On a GPU it also reports what the timed loop cost: the peak memory torch's allocator held while timing
(`gpu_memory/peak_timed`, reset when the timed span starts: the model, its CUDA graph's pool and the loop's
activations; the fp32 reference stays on the CPU until validation), and the energy NVML counted (stages/gpu/costs.py).
"""
from __future__ import annotations

from pathlib import Path

from stages import cpu_timing, flops
from stages import inputs as model_inputs
from stages.api import Param, StageResult
from stages.gpu import costs, harness, measured, peaks
from stages.gpu.harness import PARAMS as GPU_TIMING
from stages.torch_backend import compiled, precision, tensors
from stages.torch_backend.workload import TorchWorkload

VERSION = "2"  # 2: peak memory and energy of the timed span
OUTPUTS = ()
CACHED = False
PARAMS = {"feeds": Param(dict), "seed": Param(int), **GPU_TIMING}


def run(inputs: dict, params: dict, out_dir: Path) -> StageResult:
    import torch

    c = compiled.lookup(inputs["compiled"])
    precision.apply_math_mode(c.dtype)
    dtype = precision.torch_dtype(c.dtype)
    seed = params["seed"] + model_inputs.SEED_BENCHMARK
    sizes = model_inputs.sizes(params["feeds"])
    if c.device == "cpu":
        x = tensors.seeded(c.specs, sizes, seed, "cpu", dtype, c.channels_last)
        with torch.inference_mode():
            m = cpu_timing.measure(lambda: c.fn(*x), warmup_ms=params["warmup_ms"], duration_s=params["duration_s"],
                                   min_iterations=params["min_iterations"])
        tables, info = cpu_timing.tables(m, c.batch_size)
        median = next(r["value"] for r in tables["summary"] if (r["metric"], r["stat"]) == ("latency", "median"))
        if c.flops:
            tables["summary"] += flops.efficiency_rows(c.flops, median, None, peaks.SOURCE)
        return StageResult(info=info, tables=tables)
    return _run_gpu(c, params, dtype, seed, sizes)


def _run_gpu(c: compiled.Compiled, params: dict, dtype, seed: int, sizes: dict) -> StageResult:
    import torch

    from stages.gpu import session

    workloads = [TorchWorkload(c.fn, tensors.seeded(c.specs, sizes, seed + lane, "cuda", dtype, c.channels_last))
                 for lane in range(params["streams"])]
    settings = harness.Settings.from_params(params)
    memory = PeakMemory()
    with session.exclusive(watch=True) as mon, torch.inference_mode():
        m = harness.run(workloads, settings, hooks=(mon, memory))
    return measured.stage_result(m, mon, c.batch_size, flops=c.flops, gpu=torch.cuda.get_device_name(),
                                 dtype=c.dtype, info=memory.info(),
                                 rows=memory.rows())


class PeakMemory:
    """A harness hook: torch's peak allocated (and reserved) GPU memory over the timed span."""

    def __init__(self):
        self.peak = self.reserved = None

    def timed_start(self) -> None:
        import torch

        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()

    def timed_end(self) -> None:
        import torch

        torch.cuda.synchronize()
        self.peak, self.reserved = torch.cuda.max_memory_allocated(), torch.cuda.max_memory_reserved()

    def rows(self) -> list[dict]:
        if self.peak is None:
            return []
        return [costs.memory_row("peak_timed", self.peak), costs.memory_row("peak_reserved_timed", self.reserved)]

    def info(self) -> dict:
        return {} if self.peak is None else {"peak_memory_mib": self.peak / costs.MIB}

"""Costs beyond latency, as `summary` rows (metric/stat/value/unit) alike for every backend:

- `gpu_memory`: `peak_timed` (the most GPU memory allocated while the timed loop ran), `peak_build` (while the model
  was built or compiled), `weights` (what the timed model's parameters take in memory; quantized ones at their real
  size), `engine_activations` (TensorRT: an execution context's device memory); MiB;
- `artifact`: the size on disk of what a build produced or read (`weights_file`, `engine`, `onnx_export`); MiB;
- `energy`: over the timed loop, from NVML's total-energy counter (or, where the GPU has none, the integral of the
  sampled power): `total` (J), `per_inference` and `per_sample` (mJ), `inferences_per_joule` and
  `samples_per_joule`;
- `power`: `mean_timed` (W, energy over the timed span) and `cap` (W, the enforced power limit).
An inference is one call of the model on one batch (as in `flops/per_inference`); a sample is one row of it.
"""
from __future__ import annotations

from pathlib import Path

MIB = float(1 << 20)


def row(metric: str, stat: str, value: float, unit: str) -> dict:
    return {"metric": metric, "stat": stat, "value": float(value), "unit": unit}


def memory_row(stat: str, nbytes: int | float) -> dict:
    return row("gpu_memory", stat, nbytes / MIB, "MiB")


def artifact_row(name: str, nbytes: int | float) -> dict:
    return row("artifact", name, nbytes / MIB, "MiB")


def file_bytes(path: str | Path) -> int:
    """A file's size, with the external weights an ONNX model keeps beside it (`<name>.data`, as our exports and
    conversions write them)."""
    path = Path(path)
    return path.stat().st_size + sum(side.stat().st_size for side in path.parent.glob(f"{path.name}.data"))


def energy_rows(energy_j: float, span_s: float, inferences: int, batch_size: int) -> list[dict]:
    """What the timed loop cost in energy: `inferences` calls of `batch_size` samples in `span_s` seconds."""
    if not (energy_j > 0 and inferences > 0 and span_s > 0):
        return []
    samples = inferences * batch_size
    return [row("energy", "total", energy_j, "J"),
            row("energy", "per_inference", energy_j / inferences * 1e3, "mJ"),
            row("energy", "per_sample", energy_j / samples * 1e3, "mJ"),
            row("energy", "inferences_per_joule", inferences / energy_j, "1/J"),
            row("energy", "samples_per_joule", samples / energy_j, "1/J"),
            row("power", "mean_timed", energy_j / span_s, "W")]


def integrate_power(samples: list[tuple[float, float]], start_s: float, end_s: float) -> float | None:
    """Joules between `start_s` and `end_s` from (t_s, power_w) samples: the trapezoid rule over the samples in the
    span, the power held at the nearest sample out to each end. None without a sample in or around the span."""
    points = sorted((t, p) for t, p in samples if p is not None and p == p)
    if not points or end_s <= start_s:
        return None
    inside = [(t, p) for t, p in points if start_s <= t <= end_s]
    before = [(t, p) for t, p in points if t < start_s]
    after = [(t, p) for t, p in points if t > end_s]
    edge_start = inside[0][1] if inside else (before[-1][1] if before else after[0][1])
    edge_end = inside[-1][1] if inside else (after[0][1] if after else before[-1][1])
    curve = [(start_s, edge_start), *inside, (end_s, edge_end)]
    return sum((t1 - t0) * (p0 + p1) / 2 for (t0, p0), (t1, p1) in zip(curve, curve[1:]))


def tensorrt_memory(device_memory_bytes: int | None, contexts: int, io_bytes: int, engine_bytes: int) -> dict:
    """TensorRT's GPU memory while timing, from what the engine says (no allocator to ask): its weights (about the
    engine file's size) once, plus per execution context its device memory (activations, scratch) and its I/O
    buffers."""
    activations = (device_memory_bytes or 0) * contexts
    return {"engine_activations": activations, "io_buffers": io_bytes, "weights": engine_bytes,
            "peak_timed": engine_bytes + activations + io_bytes}

"""Costs beyond latency, as `summary` rows (metric/stat/value/unit) alike for every backend:

- `gpu_memory`: `peak_timed` (the most GPU memory the timed loop held: for torch its allocator's reserved memory,
  CUDA graph pools included), `peak_allocated_timed` (torch: tensors only), `graph_pools` (torch: CUDA graphs'
  private pools), `nvml_used_timed` (what NVML says this process, or the device, uses at the end of the timed
  span), `peak_build` (while the model was built or compiled), `weights` (what the timed model's parameters take in
  memory; quantized ones at their real size), `engine_activations` (TensorRT: an execution context's device
  memory); MiB. Each peak row's `counts` says what it counts;
- `artifact`: the size on disk of what a build produced or read (`weights_file`, `engine`, `onnx_export`); MiB;
- `energy`: over the timed loop, from NVML's total-energy counter (or, where the GPU has none, the integral of the
  sampled power): `total` (J), `per_inference` and `per_sample` (mJ), `inferences_per_joule` and
  `samples_per_joule`;
- `power`: `mean_timed` (W, energy over the timed span) and `cap` (W, the enforced power limit);
- `latency`: `mean_timed` (ms, the mean of the span's iterations), so that energy per inference can be checked
  against power x time (energy_check).
An inference is one call of the model on one batch (as in `flops/per_inference`); a sample is one row of it.
"""
from __future__ import annotations

from pathlib import Path

MIB = float(1 << 20)


JWS_TOLERANCE = 0.05  # energy per inference against mean power x mean latency: the relative difference allowed


def row(metric: str, stat: str, value: float, unit: str, counts: str | None = None) -> dict:
    out = {"metric": metric, "stat": stat, "value": float(value), "unit": unit}
    return {**out, "counts": counts} if counts else out


def memory_row(stat: str, nbytes: int | float, counts: str | None = None) -> dict:
    return row("gpu_memory", stat, nbytes / MIB, "MiB", counts)


def artifact_row(name: str, nbytes: int | float) -> dict:
    return row("artifact", name, nbytes / MIB, "MiB")


def file_bytes(path: str | Path) -> int:
    """A file's size, with the external weights an ONNX model keeps beside it (`<name>.data`, as our exports and
    conversions write them)."""
    path = Path(path)
    return path.stat().st_size + sum(side.stat().st_size for side in path.parent.glob(f"{path.name}.data"))


def energy_rows(energy_j: float, span_s: float, inferences: int, batch_size: int,
                mean_latency_ms: float | None = None) -> list[dict]:
    """What the timed loop cost in energy: `inferences` calls of `batch_size` samples in `span_s` seconds, with the
    span's mean power and (given) the mean latency of its iterations, the figures energy_check compares."""
    if not (energy_j > 0 and inferences > 0 and span_s > 0):
        return []
    samples = inferences * batch_size
    rows = [row("energy", "total", energy_j, "J"),
            row("energy", "per_inference", energy_j / inferences * 1e3, "mJ"),
            row("energy", "per_sample", energy_j / samples * 1e3, "mJ"),
            row("energy", "inferences_per_joule", inferences / energy_j, "1/J"),
            row("energy", "samples_per_joule", samples / energy_j, "1/J"),
            row("power", "mean_timed", energy_j / span_s, "W")]
    if mean_latency_ms:
        rows.append(row("latency", "mean_timed", mean_latency_ms, "ms"))
    return rows


def energy_check(energy_j: float, span_s: float, inferences: int, mean_latency_ms: float, streams: int = 1) -> dict:
    """Energy per inference (J) against the span's mean power (W) x the mean latency of its iterations (s), divided
    by the streams (that many inferences in flight at once). They agree within JWS_TOLERANCE when the iterations
    fill the span back to back; where they do not (the GPU idle between iterations: host-bound; iterations that
    overlap), the per-inference figure is not the cost of one latency's work, and the row is flagged.
    Runs columns: `energy_jws_ratio` (J / (W x s)), `energy_jws_ok`, and `energy_jws` (why, where not ok)."""
    if not (energy_j > 0 and span_s > 0 and inferences > 0 and mean_latency_ms > 0 and streams > 0):
        return {}
    per_inference_j = energy_j / inferences
    power_w = energy_j / span_s
    expected_j = power_w * mean_latency_ms / 1e3 / streams
    ratio = per_inference_j / expected_j
    out = {"energy_jws_ratio": ratio, "energy_jws_ok": abs(ratio - 1) <= JWS_TOLERANCE}
    if not out["energy_jws_ok"]:
        out["energy_jws"] = (f"{per_inference_j:.4g} J per inference != {power_w:.4g} W x {mean_latency_ms:.4g} ms"
                             f"{f' / {streams} streams' if streams > 1 else ''} = {expected_j:.4g} J "
                             f"({(ratio - 1) * 100:+.1f} %, allowed {JWS_TOLERANCE:.0%}): the iterations do not "
                             f"fill the timed span ({'idle gaps' if ratio > 1 else 'overlapping iterations'})")
    return out


# what each memory figure counts: the `counts` of its row
COUNTS = {
    "peak_timed": "torch allocator reserved, peak over the timed span: tensors, cached blocks and CUDA graph pools",
    "peak_allocated_timed": "torch allocator allocated, peak over the timed span: live tensors only (a CUDA graph's "
                            "intermediates, freed into its pool at capture, are not)",
    "graph_pools": "torch CUDA graph private pools (part of peak_timed)",
    "process": "NVML, this process at the end of the timed span: CUDA context, libraries, kernels, every allocator",
    "device": "NVML, the whole device at the end of the timed span: every process on it",
}


def graph_pool_bytes(segments: list[dict]) -> int:
    """Bytes the caching allocator holds in private pools (a CUDA graph's; torch.cuda.memory_snapshot() segments
    whose segment_pool_id is not the default pool's (0, 0))."""
    return sum(int(s.get("total_size", 0)) for s in segments
               if tuple(s.get("segment_pool_id") or (0, 0)) != (0, 0))


def nvml_used(processes: list, pid: int, device_used: int | None) -> tuple[int | None, str | None]:
    """(bytes, scope): this process's device memory as NVML lists it (`processes`: nvmlDeviceGetComputeRunningProcesses
    entries, with pid and usedGpuMemory), scope `process`; where it is not listed (a container's PID namespace) or
    has no figure, the device's used memory, scope `device`; (None, None) without either."""
    mine = [p.usedGpuMemory for p in processes if p.pid == pid and p.usedGpuMemory]
    if mine:
        return int(mine[0]), "process"
    return (int(device_used), "device") if device_used else (None, None)


def peak_memory(allocated: int | None, reserved: int | None, graph_pools: int | None, nvml_bytes: int | None,
                nvml_scope: str | None) -> tuple[list[dict], dict]:
    """The timed span's memory rows, each with what it counts, and the cross-check: NVML (a process or the device)
    must see at least torch's reserved memory; runs columns `memory_check` (ok or why not) and
    `memory_outside_torch_mib` (NVML's figure beyond torch's: context, libraries, other processes)."""
    rows, info = [], {}
    if reserved is not None:
        rows.append(memory_row("peak_timed", max(reserved, allocated or 0), COUNTS["peak_timed"]))
        info["peak_memory_mib"] = max(reserved, allocated or 0) / MIB
    if allocated is not None:
        rows.append(memory_row("peak_allocated_timed", allocated, COUNTS["peak_allocated_timed"]))
    if graph_pools is not None:
        rows.append(memory_row("graph_pools", graph_pools, COUNTS["graph_pools"]))
    if nvml_bytes is not None and nvml_scope in COUNTS:
        rows.append(memory_row("nvml_used_timed", nvml_bytes, COUNTS[nvml_scope]))
        if reserved is not None:
            info["memory_outside_torch_mib"] = (nvml_bytes - reserved) / MIB
            info["memory_check"] = ("ok" if nvml_bytes >= reserved else
                                    f"NVML ({nvml_scope}) sees {nvml_bytes / MIB:.0f} MiB, less than torch's "
                                    f"reserved {reserved / MIB:.0f} MiB: one of the two figures is wrong")
    return rows, info


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

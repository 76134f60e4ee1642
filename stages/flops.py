"""FLOPs per inference, counted from the graph by torch's FlopCounterMode rather than by hand."""
from __future__ import annotations


def count_torch(module, example: tuple) -> int:
    """FLOPs of one forward pass of `module` on `example`, its inputs in order (matmuls and convolutions: 2 per
    multiply-add)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        module(*example)
    return int(counter.get_total_flops())


def efficiency_rows(flops: int, median_ms: float, peak_tflops: float | None, source: str) -> list[dict]:
    """`summary` rows: FLOPs per inference, achieved TFLOP/s at the median time, and % of the dense peak."""
    achieved = flops / (median_ms * 1e-3) / 1e12 if median_ms > 0 else float("nan")
    rows = [{"metric": "flops", "stat": "per_inference", "value": float(flops), "unit": "FLOP"},
            {"metric": "achieved", "stat": "tflops", "value": achieved, "unit": "TFLOP/s"}]
    if peak_tflops:
        rows += [{"metric": "peak", "stat": "tflops", "value": peak_tflops, "unit": "TFLOP/s"},
                 {"metric": "achieved", "stat": "pct_of_peak", "value": achieved / peak_tflops * 100, "unit": "%"}]
    return rows

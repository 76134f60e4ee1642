"""Agreement of a converted model's outputs with the fp32 reference, computed on the same inputs."""
from __future__ import annotations

import numpy as np


def compare(reference: np.ndarray, candidate: np.ndarray) -> dict[str, float]:
    """max_abs_err, rel_l2_err (||c - r|| / ||r||), cosine, and top1_agreement for (batch, classes) outputs."""
    ref = np.asarray(reference, dtype=np.float64)
    out = np.asarray(candidate, dtype=np.float64)
    if ref.shape != out.shape:
        raise ValueError(f"output shapes differ: reference {ref.shape}, candidate {out.shape}")
    diff = out - ref
    ref_norm, out_norm = np.linalg.norm(ref), np.linalg.norm(out)
    metrics = {
        "max_abs_err": float(np.max(np.abs(diff))) if diff.size else 0.0,
        "rel_l2_err": float(np.linalg.norm(diff) / ref_norm) if ref_norm else float(np.linalg.norm(diff)),
        "cosine": float(np.dot(ref.ravel(), out.ravel()) / (ref_norm * out_norm)) if ref_norm and out_norm else
        float(ref_norm == out_norm),
    }
    if ref.ndim == 2 and ref.shape[1] > 1:
        metrics["top1_agreement"] = float(np.mean(ref.argmax(axis=1) == out.argmax(axis=1)))
    return metrics


def rows(output: str, metrics: dict[str, float], reference: str) -> list[dict]:
    return [{"output": output, "metric": k, "value": v, "reference": reference} for k, v in metrics.items()]

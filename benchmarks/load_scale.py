"""Time ``pipeline.results.load()`` over a synthetic sweep of many jobs.

Each job gets realistic tables written with ``write_tables``: one ``runs`` row of
~40 columns (some present only in some jobs), ~20 ``summary`` rows, 500
``samples`` rows and 4 ``accuracy`` rows.

    python benchmarks/load_scale.py --jobs 2000 --repeat 5 --out load_scale.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.results import load, write_tables  # noqa: E402

STAGES = ("export", "quantize", "build", "benchmark", "accuracy", "profile")
METRICS = ("latency", "gpu_compute", "h2d", "d2h", "enqueue")
STATS = ("mean", "median", "p90", "p99")


def job_tables(i: int, rng: random.Random) -> dict:
    run_id = f"run-{i:05d}"
    run = {
        "run_id": run_id, "sweep": "bench", "job": i, "status": "ok", "error": None,
        "backend": "tensorrt", "model": rng.choice(["resnet50", "vit_b16", "bert_base"]),
        "precision": rng.choice(["fp16", "int8", "fp8"]), "batch_size": rng.choice([1, 8, 32]),
        "optimization_level": rng.randint(0, 5), "max_aux_streams": rng.randint(0, 4),
        "overrides": f"batch_size={i % 3}", "config_hash": f"{rng.getrandbits(64):016x}",
        "config": json.dumps({"job": i, "workspace_gb": 8}), "started": "2025-01-01T00:00:00+00:00",
        "job_seconds": rng.uniform(10, 300),
        "env_gpu": "NVIDIA H100", "env_driver": "560.35", "env_cuda": "12.6", "env_trt": "10.7",
        "env_torch": "2.6.0", "env_host": f"node{i % 8}",
    }
    for stage in STAGES:
        run[f"{stage}_seconds"] = rng.uniform(0.1, 60)
        run[f"{stage}_cache"] = rng.choice(["hit", "miss", "off"])
    run.update(seed=i, warmup_ms=200, calib_samples=512, tf32=bool(i % 2), notes=None)
    # Columns that only some jobs have, with different types, as in real sweeps.
    if i % 3 == 0:
        run["calib_method"] = rng.choice(["max", "entropy"])
    if i % 4 == 0:
        run["workspace_gb"] = 8
    if i % 5 == 0:
        run["sparsity"] = 0.5
    summary = [
        {"run_id": run_id, "metric": m, "stat": s, "value": rng.uniform(0.5, 20), "unit": "ms"}
        for m in METRICS for s in STATS
    ]
    n = 500
    samples = {
        "run_id": [run_id] * n, "trial": [k // 100 for k in range(n)],
        "iteration": [k % 100 for k in range(n)], "metric": ["latency"] * n,
        "value_ms": [rng.gauss(5, 0.3) for _ in range(n)],
    }
    accuracy = [
        {"run_id": run_id, "output": "logits", "metric": m, "value": rng.random(), "reference": "onnxruntime"}
        for m in ("top1", "top5", "max_abs_err", "cosine")
    ]
    return {"runs": [run], "summary": summary, "samples": samples, "accuracy": accuracy}


def make_sweep(root: Path, jobs: int, seed: int = 0) -> float:
    rng = random.Random(seed)
    t0 = time.perf_counter()
    for i in range(jobs):
        write_tables(root / f"job{i:05d}", job_tables(i, rng))
    return time.perf_counter() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--dir", type=Path,
                    help="directory to write the synthetic sweep into (default: a temp dir, removed afterwards)")
    ap.add_argument("--out", type=Path, help="append the figures as one JSON line to this file")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="load_scale_") as tmp:
        root = args.dir or Path(tmp) / "sweep"
        gen_s = make_sweep(root, args.jobs)
        print(f"wrote {args.jobs} jobs in {gen_s:.1f} s under {root}")
        times, res = [], None
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            res = load(root)
            times.append(time.perf_counter() - t0)
        rows = {t: len(getattr(res, t)) for t in ("runs", "summary", "samples", "accuracy")}
        fig = {
            "jobs": args.jobs, "repeat": args.repeat, "min_s": min(times),
            "median_s": statistics.median(times), "max_s": max(times), "rows": rows,
            "runs_columns": res.runs.shape[1], "skipped": len(res.skipped),
            "cpus": os.cpu_count(), "python": platform.python_version(),
        }
    print(f"load(): min {fig['min_s']:.3f} s  median {fig['median_s']:.3f} s  max {fig['max_s']:.3f} s "
          f"over {args.repeat} repeats")
    print(f"rows: {rows}  runs columns: {fig['runs_columns']}")
    if args.out:
        with open(args.out, "a") as f:
            f.write(json.dumps(fig) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

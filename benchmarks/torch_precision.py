"""Precision sweep with the torch backend on a GPU: fp32 / tf32 / fp16 / bf16 x models x batch sizes.

    python benchmarks/torch_precision.py [--models resnet50,vit_b16] [--batches 1,128] [--mode eager]
                                         [--duration 3] [--out docs/benchmarks/torch_precision.json]

Runs the pipeline CLI as a user would (one Hydra multirun, CUDA graph on, the cuda-python harness), then
reads the sweep's tables: throughput, median GPU compute time, achieved % of the dense peak for the dtype,
and the median SM clock during measurement. Writes JSON and a Markdown table next to it.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="resnet50,vit_b16")
    parser.add_argument("--batches", default="1,128")
    parser.add_argument("--precisions", default="fp32,tf32,fp16,bf16")
    parser.add_argument("--mode", default="eager", help="backend.compile")
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--out", type=Path, default=ROOT / "docs/benchmarks/torch_precision.json")
    args = parser.parse_args()
    from pipeline import results

    sweep_root = ROOT / "outputs/sweeps/multirun"
    before = set(sweep_root.iterdir()) if sweep_root.exists() else set()
    command = ["-m", "backend=torch", f"model={args.models}", f"batch_size={args.batches}",
               f"precision={args.precisions}", f"backend.compile={args.mode}", f"benchmark.duration_s={args.duration}",
               "validate.batches=2"]
    print("python -m pipeline " + " ".join(command), flush=True)
    proc = subprocess.run([sys.executable, "-m", "pipeline", *command], cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")})
    (sweep_dir,) = set(sweep_root.iterdir()) - before
    r = results.load(sweep_dir)
    s = r.summary.set_index(["run_id", "metric", "stat"])["value"]
    rows = []
    for run in r.runs.sort_values(["model", "batch_size", "job"]).itertuples():
        get = lambda metric, stat, run=run: s.get((run.run_id, metric, stat))  # noqa: E731
        rows.append({"model": run.model, "batch_size": int(run.batch_size), "precision": run.precision,
                     "status": run.status, "error": run.error,
                     "samples_per_s": get("throughput", "samples_per_s"),
                     "median_gpu_compute_ms": get("gpu_compute", "median"),
                     "p99_gpu_compute_ms": get("gpu_compute", "p99"), "cov_pct": get("gpu_compute", "cov"),
                     "achieved_tflops": get("achieved", "tflops"), "pct_of_dense_peak": get("achieved", "pct_of_peak"),
                     "sm_clock_median_mhz": getattr(run, "benchmark_sm_clock_median_mhz", None),
                     "throttled": _plain(getattr(run, "benchmark_throttled", None)),
                     "throttle_reasons": getattr(run, "benchmark_throttle_reasons", None),
                     "verdict": getattr(run, "benchmark_verdict", None),
                     "cuda_graph": _plain(getattr(run, "benchmark_cuda_graph", None)),
                     "top1_agreement": getattr(run, "validate_top1_agreement", None)})
    env = r.runs.iloc[0]
    report = {"gpu": env.get("env_gpu"), "driver": env.get("env_driver"), "torch": env.get("env_torch"),
              "command": "python -m pipeline " + " ".join(command), "sweep_dir": str(sweep_dir.relative_to(ROOT)),
              "results": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    args.out.with_suffix(".md").write_text(markdown(report))
    print(markdown(report))
    return proc.returncode


def _plain(value):
    """pandas' nullable booleans as JSON booleans (or null)."""
    return None if value is None or str(value) in ("<NA>", "nan") else bool(value)


def markdown(report: dict) -> str:
    f = lambda v, spec: "-" if v is None or v != v else format(v, spec)  # noqa: E731 (v != v: NaN)
    lines = [f"GPU {report['gpu']}, driver {report['driver']}, torch {report['torch']}", "",
             f"`{report['command']}`", "",
             "| model | batch | precision | status | samples/s | median GPU compute ms | % dense peak "
             "| median SM MHz | throttled | verdict |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in report["results"]:
        lines.append(f"| {r['model']} | {r['batch_size']} | {r['precision']} | {r['status']} | "
                     f"{f(r['samples_per_s'], ',.0f')} | {f(r['median_gpu_compute_ms'], '.3f')} | "
                     f"{f(r['pct_of_dense_peak'], '.1f')} | {f(r['sm_clock_median_mhz'], '.0f')} | "
                     f"{r['throttled']} | {r['verdict']} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())

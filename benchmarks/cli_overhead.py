"""What the orchestrator costs: CLI start-up, and per-job overhead in a fully cached sweep.

    python benchmarks/cli_overhead.py [--repeat 5] [--out docs/benchmarks/cli_overhead.json]

1. `python -m pipeline --help`, wall time over --repeat runs (torch, onnx and modelopt must not load).
2. The precision sweep (tiny_cnn, onnxruntime CPU) is run once to fill a fresh cache, then --repeat more
   times fully cached with the measurement cut to one iteration. For each cached sweep:
   per-job overhead = (sweep wall time - time spent in the measuring stages: benchmark, validate,
   profile) / jobs.
   That includes process start-up shared by the jobs, config composition, cache look-ups with their
   digest checks, and the table writes. It is what a user waits for beyond the measurement itself.
Figures are min / median / max over the repeats.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MINIMAL = ["benchmark.duration_s=0", "benchmark.warmup_ms=0", "benchmark.min_iterations=1", "validate.batches=1",
           "profile.iterations=1", "report.enabled=false"]


def cli(args: list[str], cwd: Path) -> float:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=cwd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"pipeline {' '.join(args)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return wall


def spread(values: list[float]) -> dict:
    return {"min": min(values), "median": statistics.median(values), "max": max(values), "n": len(values)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--out", type=Path, default=ROOT / "docs/benchmarks/cli_overhead.json")
    args = parser.parse_args()
    from pipeline import results

    work = Path(tempfile.mkdtemp(prefix="cli-overhead-"))
    cli(["--help"], work)  # warm the file cache
    help_s = [cli(["--help"], work) for _ in range(args.repeat)]
    print(f"--help: median {statistics.median(help_s):.3f} s")

    cli(["+sweep=precision", *MINIMAL], work)  # fills the cache
    per_job, in_job = [], []
    for _ in range(args.repeat):
        before = set((work / "outputs/sweeps/precision").iterdir())
        wall = cli(["+sweep=precision", *MINIMAL], work)
        (sweep_dir,) = set((work / "outputs/sweeps/precision").iterdir()) - before
        runs = results.load(sweep_dir, tables=("runs",)).runs
        assert set(runs["export_cache"]) == {"hit"}, "the timed sweep must be fully cached"
        # measurements (benchmark, validate, profile: the stages that always run) are not overhead
        stages = [c[:-6] for c in runs.columns if c.endswith("_cache") and (runs[c] == "off").any()]
        measured = sum(runs[f"{s}_seconds"].fillna(0) for s in stages)
        per_job.append((wall - measured.sum()) / len(runs))
        in_job.extend((runs["job_seconds"] - measured).tolist())
        print(f"cached sweep: {wall:.2f} s wall for {len(runs)} jobs, {per_job[-1]:.3f} s/job beyond measuring")
    figures = {
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "python": platform.python_version()},
        "help_seconds": spread(help_s),
        "cached_sweep_overhead_per_job_seconds": spread(per_job),
        "in_job_overhead_seconds": spread(in_job),
        "sweep": "+sweep=precision (6 jobs, tiny_cnn, onnxruntime CPU), " + " ".join(MINIMAL),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()

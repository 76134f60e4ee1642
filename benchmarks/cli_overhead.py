"""What the orchestrator costs: CLI start-up, and per-job overhead in a fully cached sweep.

    python benchmarks/cli_overhead.py [--repeat 5] [--out docs/benchmarks/cli_overhead.json]

1. `python -m pipeline --help`, wall time over --repeat runs (torch, onnx and modelopt must not load), each run
   paired with one of a bare `python -c "import hydra, omegaconf"`: the ratio help / bare, pair by pair, is what
   the orchestrator adds to Hydra's own import, and holds when the machine's speed drifts (goal: < 3x).
2. The precision sweep (the default digits model, onnxruntime CPU; 6 jobs, and 12 with batch_size=1,2; 3 with
   precision=fp32,fp16,int8) is run once to fill a fresh cache, then --repeat more times fully cached with the
   measurement cut to one iteration, the three sweeps in turn. Overhead = sweep wall time - time spent in the
   measuring stages (benchmark, validate, profile).
   - per job: overhead / jobs for the 6-job sweep, process start-up shared by its jobs included;
   - marginal: what each job adds, (overhead of 12 jobs - overhead of 6) / 6 (goal: < 0.1 s). The 6 jobs more
     are batch sizes, a value axis: each shares the group options of a precision point, so the sweeper composes
     it from that point's defaults list and merged config (hydra_plugins/pipeline_sweeper/resilient.py), then
     Hydra's per-job files, the cache look-ups with their digest checks, the table writes;
   - marginal, group axis: (overhead of 6 jobs - overhead of 3) / 3, each job more a precision, a config group
     option: composed from scratch.
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


def bare_import(cwd: Path) -> float:
    """Wall time of a bare `import hydra, omegaconf`: the yardstick --help is paired with."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import hydra, omegaconf"], cwd=cwd, check=True, capture_output=True)
    return time.perf_counter() - start


def cli(args: list[str], cwd: Path) -> float:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=cwd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"pipeline {' '.join(args)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return wall


def cached_sweep(work: Path, extra: list[str]) -> tuple[float, int, list[float]]:
    """Wall time beyond measuring of one fully cached precision sweep, its job count, and per-job in-job overhead."""
    from pipeline import results

    root = work / "outputs/sweeps/precision"
    before = set(root.iterdir())
    wall = cli(["+sweep=precision", *extra, *MINIMAL], work)
    (sweep_dir,) = set(root.iterdir()) - before
    runs = results.load(sweep_dir, tables=("runs",)).runs
    assert set(runs["export_cache"]) == {"hit"}, "the timed sweep must be fully cached"
    failed = runs[runs["status"] == "failed"]  # a failing job costs less than a measured one: not overhead
    assert failed.empty, f"{len(failed)} failed jobs in the timed sweep, the first: {failed['error'].iloc[0]}"
    # measurements (benchmark, validate, profile: the stages that always run) are not overhead
    stages = [c[:-6] for c in runs.columns if c.endswith("_cache") and (runs[c] == "off").any()]
    measured = sum(runs[f"{s}_seconds"].fillna(0) for s in stages)
    return wall - measured.sum(), len(runs), (runs["job_seconds"] - measured).tolist()


def spread(values: list[float]) -> dict:
    return {"min": min(values), "median": statistics.median(values), "max": max(values), "n": len(values)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--out", type=Path, default=ROOT / "docs/benchmarks/cli_overhead.json")
    args = parser.parse_args()

    load_before = os.getloadavg()[0]  # a busy machine slows every figure: recorded beside them
    work = Path(tempfile.mkdtemp(prefix="cli-overhead-"))
    cli(["--help"], work)  # warm the file cache
    bare_import(work)
    help_s, bare_s = [], []
    for _ in range(args.repeat):  # paired, A B A B: the ratio is taken pair by pair
        help_s.append(cli(["--help"], work))
        bare_s.append(bare_import(work))
    ratio = [h / b for h, b in zip(help_s, bare_s, strict=True)]
    print(f"--help: median {statistics.median(help_s):.3f} s, {statistics.median(ratio):.2f}x a bare "
          f"import hydra, omegaconf ({statistics.median(bare_s):.3f} s)")

    cli(["+sweep=precision", "batch_size=1,2", *MINIMAL], work)  # fills the cache for the sweeps below
    per_job, marginal, marginal_group, in_job = [], [], [], []
    for _ in range(args.repeat):
        small, n_small, inside = cached_sweep(work, [])
        large, n_large, _ = cached_sweep(work, ["batch_size=1,2"])
        fewer, n_fewer, _ = cached_sweep(work, ["precision=fp32,fp16,int8"])
        per_job.append(small / n_small)
        marginal.append((large - small) / (n_large - n_small))
        marginal_group.append((small - fewer) / (n_small - n_fewer))
        in_job.extend(inside)
        print(f"cached sweeps: {per_job[-1]:.3f} s/job over {n_small} jobs (start-up shared), "
              f"{marginal[-1]:.3f} s for each job more (a batch size), {marginal_group[-1]:.3f} s (a precision); "
              f"beyond measuring")
    figures = {
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "python": platform.python_version(),
                    "load_average_1min": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)}},
        "command": f"python benchmarks/cli_overhead.py --repeat {args.repeat}",
        "help_seconds": spread(help_s),
        "bare_import_hydra_omegaconf_seconds": spread(bare_s),
        "help_over_bare_import_ratio": spread(ratio),
        "goals": {"help_over_bare_import_ratio": "< 3", "marginal_overhead_per_extra_job_seconds": "< 0.1"},
        "cached_sweep_overhead_per_job_seconds": spread(per_job),
        "marginal_overhead_per_extra_job_seconds": spread(marginal),
        "marginal_overhead_per_extra_group_option_job_seconds": spread(marginal_group),
        "in_job_overhead_seconds": spread(in_job),
        "sweep": "+sweep=precision (6 jobs; with batch_size=1,2, 12 jobs; with precision=fp32,fp16,int8, 3 jobs), "
                 "the default digits model, onnxruntime CPU, " + " ".join(MINIMAL),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()

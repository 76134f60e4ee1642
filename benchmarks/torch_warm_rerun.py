"""What a cached torch point costs on the CPU: the AOTInductor package built once, then served from the cache.

    python benchmarks/torch_warm_rerun.py [--repeat 3] [--out docs/benchmarks/torch_warm_rerun_cpu.json]

One cold run of `python -m pipeline backend=torch backend.device=cpu backend.compile=default model=tiny_cnn` (the
build stage compiles the package), then --repeat warm runs of the same point into the same cache. Per warm run: the
process's wall time, the build stage's cache outcome and seconds, the measuring stages' seconds (benchmark,
validate, profile), and what is left (wall - benchmark - validate - profile: process start, imports, cache
look-ups, opening the package, the tables). Apart from the runs, the package is loaded in --repeat fresh processes
(`torch._inductor.aoti_load_package`): the import of torch._inductor, the first load and a second one (what the
second measuring stage of a job pays), each timed on its own.
Goals (the torch artifacts issue): package load < 1 s; a cached point within 3 s of its benchmark and validate time.
Figures are min / median / max.
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
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

POINT = ["backend=torch", "backend.device=cpu", "backend.compile=default", "model=tiny_cnn", "batch_size=8",
         "benchmark.duration_s=1", "benchmark.warmup_ms=100", "validate.batches=2", "profile.enabled=false"]
MEASURING = ("benchmark", "validate", "profile")
# the package's load in a fresh process, apart from importing torch._inductor (which any torch.compile pays too)
LOAD = ("import sys, time, torch; t = time.perf_counter(); import torch._inductor; u = time.perf_counter(); "
        "torch._inductor.aoti_load_package(sys.argv[1]); v = time.perf_counter(); "
        "torch._inductor.aoti_load_package(sys.argv[1]); print(u - t, v - u, time.perf_counter() - v)")


def stats(values: list[float]) -> dict:
    return {"min": min(values), "median": statistics.median(values), "max": max(values), "n": len(values)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks" / "torch_warm_rerun_cpu.json")
    args = parser.parse_args()
    from benchmarks.cli_overhead import cli as run  # the CLI timed as a whole process, failing loudly
    from pipeline import results

    with tempfile.TemporaryDirectory(prefix="warm-rerun-") as tmp:
        work = Path(tmp)
        points = []
        for i in range(args.repeat + 1):
            wall = run([*POINT, f"hydra.run.dir=run{i}", "cache.dir=cache"], work)
            row = results.load(work / f"run{i}", tables=("runs",)).runs.iloc[0]
            measuring = sum(float(row.get(f"{node}_seconds") or 0.0) for node in MEASURING)
            points.append({"wall_s": wall, "build_cache": row.get("build_cache"), "build_path": row.get("build_path"),
                           "build_s": row.get("build_seconds"), "measuring_s": measuring,
                           "overhead_s": wall - measuring, "status": row.status})
            print(f"{'cold' if i == 0 else 'warm'}: {wall:.1f} s, build {row.get('build_cache')} "
                  f"({row.get('build_path')}), measuring {measuring:.1f} s", flush=True)
        package = next((work / "cache").rglob("model.pt2"))
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        loads = [[float(x) for x in subprocess.run([sys.executable, "-c", LOAD, str(package)], env=env,
                                                   capture_output=True, text=True, check=True
                                                   ).stdout.strip().splitlines()[-1].split()]
                 for _ in range(args.repeat)]
    warm = points[1:]
    report = {
        "command": "python benchmarks/torch_warm_rerun.py --repeat %d" % args.repeat,
        "machine": {"cpu": platform.machine(), "cores": os.cpu_count(), "python": platform.python_version()},
        "point": POINT, "cold": points[0], "warm": warm,
        "warm_wall_seconds": stats([p["wall_s"] for p in warm]),
        "warm_overhead_seconds": stats([p["overhead_s"] for p in warm]),
        "inductor_import_seconds": stats([x[0] for x in loads]),
        "package_load_seconds": stats([x[1] for x in loads]),
        "package_second_load_seconds": stats([x[2] for x in loads]),
        "package_bytes": package.stat().st_size if package.exists() else None,
        "goals": {"package load < 1 s": statistics.median([x[1] for x in loads]) < 1.0,
                  "cached point within 3 s of its measuring stages": statistics.median(
                      [p["overhead_s"] for p in warm]) < 3.0},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=str))
    print(json.dumps({k: report[k] for k in ("warm_wall_seconds", "warm_overhead_seconds", "inductor_import_seconds",
                                             "package_load_seconds", "package_second_load_seconds", "goals")},
                     indent=2))


if __name__ == "__main__":
    main()

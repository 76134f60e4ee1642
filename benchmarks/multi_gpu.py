"""One sweep over every GPU of a host against the same sweep on one GPU: wall time and each point's median.

    python benchmarks/multi_gpu.py --out docs/benchmarks/multi_gpu.json [--model resnet50 --batch 128
        --points precision=fp32,tf32,fp16,bf16 --points backend.compile=eager,default --duration 2]

Runs the sweep twice through the CLI: on the first visible GPU alone (CUDA_VISIBLE_DEVICES narrowed to it, Hydra's
basic launcher: one job after another), then with `hydra/launcher=gpus` (one worker per visible GPU). Both share
one artifact cache, warmed by a first pass, so the comparison is of the measurements, not of who built first.
Writes the JSON and a markdown table beside it: both wall times, the speedup, and per point both medians, their
difference and which GPU ran it. The issue's targets: >= 6x on 8 GPUs, >= 1.8x on 2, each median within 2 %.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline import results  # noqa: E402
from stages.gpu import pinning  # noqa: E402


def sweep(name: str, args: list[str], work: Path, env: dict, axes: list[str]) -> tuple[float, dict]:
    """(wall seconds, {point overrides: row}) of one sweep."""
    out = work / name
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pipeline", "-m", *args, f"hydra.sweep.dir={out}"], cwd=work,
                          env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    print(f"{name}: {wall:.1f} s, exit {proc.returncode}\n{proc.stdout[-1500:]}{proc.stderr[-1500:]}", flush=True)
    loaded = results.load(out)
    s = loaded.summary
    points = {}
    for row in loaded.runs.itertuples():
        mine = s[(s.run_id == row.run_id) & (s.stat == "median")]
        hit = mine[mine.metric == "gpu_compute"]["value"]
        hit = hit if len(hit) else mine[mine.metric == "latency"]["value"]  # host-timed: a CPU try of this script
        points[_point(row.overrides, axes)] = {
            "status": row.status, "error": row.error, "median_ms": float(hit.iloc[0]) if len(hit) else None,
            "gpu_device": getattr(row, "gpu_device", None), "gpu_uuid": getattr(row, "env_gpu_uuid", None),
            "sm_clock_median_mhz": getattr(row, "benchmark_sm_clock_median_mhz", None)}
    return wall, points


def _point(overrides: str, axes: list[str]) -> str:
    """A point by its swept values: 'backend.compile=eager precision=fp16'."""
    keys = {axis.partition("=")[0] for axis in axes}
    return " ".join(sorted(o for o in overrides.split() if o.partition("=")[0] in keys))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--model", default="resnet50")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--points", action="append", help="a sweep axis, key=v1,v2 (repeatable)")
    ap.add_argument("--duration", type=float, default=2.0)
    args = ap.parse_args(argv)
    axes = args.points or ["precision=fp32,tf32,fp16,bf16", "backend.compile=eager,default"]
    gpus = pinning.visible()
    if not gpus:
        print("no GPU visible", file=sys.stderr)
        return 2
    common = ["backend=torch", f"model={args.model}", f"batch_size={args.batch}", *axes, "profile.enabled=false",
              "validate.batches=1", "report.enabled=false"]
    timed = [*common, f"benchmark.duration_s={args.duration}"]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
               "PIPELINE_GPU_LOCK_DIR": str(work)}
        one = {**env, "CUDA_VISIBLE_DEVICES": gpus[0]}
        sweep("warm", [*common, "benchmark.duration_s=0.2"], work, one, axes)  # builds and compile caches, once
        one_wall, on_one = sweep("one_gpu", timed, work, one, axes)
        all_wall, on_all = sweep("all_gpus", [*timed, "hydra/launcher=gpus"], work,
                                 {**env, "CUDA_VISIBLE_DEVICES": ",".join(gpus)}, axes)
    rows = []
    for point, a in on_one.items():
        b = on_all.get(point, {})
        diff = (100 * (b["median_ms"] - a["median_ms"]) / a["median_ms"]
                if a.get("median_ms") and b.get("median_ms") else None)
        rows.append({"point": point, "one_gpu_ms": a.get("median_ms"), "all_gpus_ms": b.get("median_ms"),
                     "diff_pct": diff, "gpu_device": b.get("gpu_device"), "gpu_uuid": b.get("gpu_uuid"),
                     "status": [a.get("status"), b.get("status")], "error": a.get("error") or b.get("error")})
    report = {"gpus": gpus, "model": args.model, "batch": args.batch, "axes": axes, "duration_s": args.duration,
              "one_gpu_wall_s": one_wall, "all_gpus_wall_s": all_wall, "speedup": one_wall / all_wall,
              "max_abs_diff_pct": max((abs(r["diff_pct"]) for r in rows if r["diff_pct"] is not None),
                                      default=None), "points": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    lines = [f"{len(gpus)} GPU(s) {','.join(gpus)}: one GPU {one_wall:.1f} s, all {all_wall:.1f} s, "
             f"{report['speedup']:.2f}x", "", "| point | one GPU ms | all GPUs ms | diff % | GPU |",
             "|---|---|---|---|---|"]
    for r in rows:
        fmt = lambda v, spec: "-" if v is None else format(v, spec)  # noqa: E731
        lines.append(f"| {r['point']} | {fmt(r['one_gpu_ms'], '.3f')} | {fmt(r['all_gpus_ms'], '.3f')} | "
                     f"{fmt(r['diff_pct'], '+.2f')} | {r['gpu_device']} |")
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Does the pipeline's GPU timing agree with an independent measurement of the same work?

    python benchmarks/gpu_fidelity.py [--configs resnet50:64:fp16,vit_b16:32:bf16] [--mode default]
                                      [--duration 3] [--out docs/benchmarks/gpu_fidelity.json]

For each model:batch:precision the torch backend's own stages build the model and torch.compile it (one
compiled callable). Then:
- pipeline: the benchmark stage (cuda-python harness, CUDA graph on, enqueue-ahead, spin-wait);
- independent: the same compiled callable captured by torch's own CUDA graph API (torch.cuda.graph) and
  replayed with torch.cuda.Event pairs around each replay on one stream: no cuda-python, no harness; no L2
  flush, the same warm-up time, the host running ahead so the GPU never waits for it, one
  synchronisation at the end.
The medians must agree within 3 %. Both spreads (p10, p90, CoV) are reported. For scale, the same events
around plain (graph-less) calls are reported too: when the CPU cannot launch kernels as fast as the GPU
runs them, those include the GPU's idle gaps, which is why CUDA graphs are on by default.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TOLERANCE_PCT = 3.0


def spread(values: list[float]) -> dict:
    from stages import timing_stats

    d = timing_stats.describe(values)
    s = sorted(values)
    return {"median_ms": d["median"], "p10_ms": s[int(0.1 * (len(s) - 1))], "p90_ms": d["p90"],
            "min_ms": d["min"], "max_ms": d["max"], "cov_pct": d["cov"], "n": len(values)}


def independent(fn, x, warmup_ms: float, n: int, graph: bool) -> list[float]:
    import torch

    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream), torch.inference_mode():
        call = lambda: fn(x)  # noqa: E731
        if graph:
            for _ in range(3):
                fn(x)
            g = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g, stream=stream):
                fn(x)
            call = g.replay
        end = time.perf_counter() + warmup_ms / 1e3
        while time.perf_counter() < end:
            call()
        stream.synchronize()
        pairs = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(n)]
        for start, stop in pairs:
            start.record(stream)
            call()
            stop.record(stream)
        stream.synchronize()
    return [a.elapsed_time(b) for a, b in pairs]


def measure(model: str, batch: int, precision: str, mode: str, duration_s: float, warmup_ms: float) -> dict:
    import torch

    from stages import inputs as model_inputs
    from stages.torch_backend import benchmark, compiled, tensors
    from stages.torch_backend import compile as compile_stage
    from stages.torch_backend import model as model_stage

    work = Path(tempfile.mkdtemp(prefix="fidelity-"))
    model_cfg = {"name": model, "source": "builtin", "num_classes": None, "input_shape": None, "_target_": None}
    model_stage.run({}, {"model": model_cfg, "seed": 0}, work)
    started = time.perf_counter()
    compile_stage.run({"weights": work / model_stage.WEIGHTS},
                      {"precision": precision, "mode": mode, "channels_last": False, "device": "cuda",
                       "batch_size": batch, "seed": 0}, work)
    compile_s = time.perf_counter() - started
    handle = work / compile_stage.FILE
    params = {"batch_size": batch, "seed": 0, "warmup_ms": warmup_ms, "duration_s": duration_s, "min_iterations": 10,
              "trials": 1, "cuda_graph": True, "sync": "spin", "data_transfers": False, "streams": 1}
    result = benchmark.run({"compiled": handle}, params, work)
    s = result.tables["samples"]
    ours = [v for m, v in zip(s["metric"], s["value_ms"]) if m == "gpu_compute"]
    c = compiled.lookup(handle)
    x = tensors.seeded(c.input_shape, batch, params["seed"] + model_inputs.SEED_BENCHMARK, "cuda",
                       getattr(torch, {"fp16": "float16", "bf16": "bfloat16"}.get(precision, "float32")))
    theirs = independent(c.fn, x, warmup_ms, len(ours), graph=True)
    plain = independent(c.fn, x, warmup_ms, len(ours), graph=False)
    a, b = spread(ours), spread(theirs)
    diff = (a["median_ms"] / b["median_ms"] - 1) * 100
    return {"model": model, "batch_size": batch, "precision": precision, "compile_mode": mode,
            "first_call_s": round(compile_s, 1), "cuda_graph": result.info["cuda_graph"],
            "graph_note": result.info["graph_note"], "verdict": result.info["verdict"],
            "sm_clock_median_mhz": result.info.get("sm_clock_median_mhz"), "throttled": result.info.get("throttled"),
            "pipeline": a, "independent": b, "median_diff_pct": diff, "agree": abs(diff) < TOLERANCE_PCT,
            "plain_calls_no_graph": spread(plain)}


def _args_without_out(argv: list[str]) -> list[str]:
    """The command as recorded: where the figures were written is the machine's business, not the result's."""
    kept, skip = [], False
    for arg in argv:
        if skip or arg.startswith("--out"):
            skip = arg == "--out"
            continue
        kept.append(arg)
    return kept


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", default="resnet50:64:fp16,vit_b16:32:bf16")
    parser.add_argument("--mode", default="default", help="backend.compile: eager | default | max-autotune")
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--warmup-ms", type=float, default=200.0)
    parser.add_argument("--out", type=Path, default=ROOT / "docs/benchmarks/gpu_fidelity.json")
    args = parser.parse_args()
    import torch

    from pipeline import environment

    rows = []
    for spec in args.configs.split(","):
        model, batch, precision = spec.split(":")
        row = measure(model, int(batch), precision, args.mode, args.duration, args.warmup_ms)
        rows.append(row)
        print(f"{model} b{batch} {precision}: pipeline {row['pipeline']['median_ms']:.4f} ms "
              f"(p10 {row['pipeline']['p10_ms']:.4f}, p90 {row['pipeline']['p90_ms']:.4f}), independent "
              f"{row['independent']['median_ms']:.4f} ms (p10 {row['independent']['p10_ms']:.4f}, "
              f"p90 {row['independent']['p90_ms']:.4f}): {row['median_diff_pct']:+.2f} %  "
              f"{'AGREE' if row['agree'] else 'DISAGREE'}; plain calls without a graph "
              f"{row['plain_calls_no_graph']['median_ms']:.4f} ms", flush=True)
    env = environment.capture()
    report = {"gpu": env["gpu"], "driver": env["driver"], "cuda_driver": env["cuda"], "torch": torch.__version__,
              "torch_cuda": torch.version.cuda, "tolerance_pct": TOLERANCE_PCT,
              "command": "python benchmarks/gpu_fidelity.py " + " ".join(_args_without_out(sys.argv[1:])),
              "results": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    return 0 if all(r["agree"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())

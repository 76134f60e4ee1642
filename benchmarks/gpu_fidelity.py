"""Does the pipeline's GPU timing agree with an independent measurement of the same work?

    python benchmarks/gpu_fidelity.py [--configs resnet50:64:fp16,vit_b16:32:bf16] [--mode default]
                                      [--duration 3] [--tolerance 3] [--out docs/benchmarks/gpu_fidelity.json]
    python benchmarks/gpu_fidelity.py --new-modes --tolerance 1 --out $OUT/gpu_fidelity_lowp.json

A config is model:batch:precision[:quantization[:compile[:cl]]] (quantization: backend.quantization, e.g.
fp8_dynamic_rowwise; compile: backend.compile, default --mode; cl: channels_last). --new-modes checks the int8/fp8
recipes and max-autotune (NEW_MODES below).

For each config the torch backend's own stages build the model, quantize it (a recipe) and torch.compile it (one
compiled callable). Then:
- pipeline: the benchmark stage (cuda-python harness, CUDA graph on, enqueue-ahead, spin-wait);
- independent: the same compiled callable captured by torch's own CUDA graph API (torch.cuda.graph) and
  replayed with torch.cuda.Event pairs around each replay on one stream: no cuda-python, no harness; no L2
  flush, the same warm-up time, the host running ahead so the GPU never waits for it, one
  synchronisation at the end.
The medians must agree within --tolerance (3 % by default). Both spreads (p10, p90, CoV) are reported. For
scale, the same events around plain (graph-less) calls are reported too: when the CPU cannot launch kernels as
fast as the GPU runs them, those include the GPU's idle gaps, which is why CUDA graphs are on by default.
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
# int8 / fp8 recipes composed with torch.compile, and max-autotune: small enough to compile in about a minute each
NEW_MODES = ("vit_b16:64:fp8:fp8_dynamic_rowwise:default,vit_b16:64:int8:int8_static:default,"
             "vit_tiny:128:bf16:none:max-autotune")


def spread(values: list[float]) -> dict:
    from stages import timing_stats

    d = timing_stats.describe(values)
    s = sorted(values)
    return {"median_ms": d["median"], "p10_ms": s[int(0.1 * (len(s) - 1))], "p90_ms": d["p90"],
            "min_ms": d["min"], "max_ms": d["max"], "cov_pct": d["cov"], "n": len(values)}


def independent(fn, x: tuple, warmup_ms: float, n: int, graph: bool) -> list[float]:
    import torch

    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream), torch.inference_mode():
        call = lambda: fn(*x)  # noqa: E731
        if graph:
            for _ in range(3):
                fn(*x)
            g = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g, stream=stream):
                fn(*x)
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


def parse(spec: str, mode: str) -> dict:
    parts = spec.split(":")
    model, batch, precision = parts[:3]
    quantization = parts[3] if len(parts) > 3 else "auto"
    return {"model": model, "batch_size": int(batch), "precision": precision, "quantization": quantization,
            "mode": parts[4] if len(parts) > 4 else mode, "channels_last": len(parts) > 5 and parts[5] == "cl"}


def measure(config: dict, duration_s: float, warmup_ms: float, tolerance: float, cache_dir: Path) -> dict:
    from stages import api, benchmark
    from stages import inputs as model_inputs
    from stages.torch_backend import compile as compile_stage
    from stages.torch_backend import compiled, precision, tensors
    from stages.torch_backend import model as model_stage

    work = Path(tempfile.mkdtemp(prefix="fidelity-"))
    api.set_shared_root(cache_dir)  # torch.compile's caches, as in a job (cache.dir/shared)
    feeds = {"batch_size": config["batch_size"], "axes": {}, "inputs": {}, "input_shape": None, "data": {}}
    model_cfg = {"name": config["model"], "source": "builtin", "num_classes": None, "input_shape": None,
                 "_target_": None}
    model_stage.run({}, {"model": model_cfg, "seed": 0, "feeds": feeds}, work)
    started = time.perf_counter()
    built = compile_stage.run({"weights": work / model_stage.WEIGHTS},
                              {"precision": config["precision"], "mode": config["mode"],
                               "channels_last": config["channels_last"], "device": "cuda", "feeds": feeds, "seed": 0,
                               "quantization": config["quantization"]}, work)
    compile_s = time.perf_counter() - started
    handle = work / compile_stage.FILE
    params = {"plugin": "stages.torch_backend", "options": {}, "feeds": feeds, "seed": 0, "warmup_ms": warmup_ms,
              "duration_s": duration_s, "min_iterations": 10,
              "trials": 1, "cuda_graph": True, "sync": "spin", "data_transfers": False, "streams": 1}
    result = benchmark.run({"compiled": handle}, params, work)
    s = result.tables["samples"]
    ours = [v for m, v in zip(s["metric"], s["value_ms"]) if m == "gpu_compute"]
    c = compiled.lookup(handle)
    x = tensors.seeded(c.specs, model_inputs.sizes(feeds), params["seed"] + model_inputs.SEED_BENCHMARK, "cuda",
                       precision.torch_dtype(config["precision"]), config["channels_last"])
    theirs = independent(c.fn, x, warmup_ms, len(ours), graph=True)
    plain = independent(c.fn, x, warmup_ms, len(ours), graph=False)
    a, b = spread(ours), spread(theirs)
    diff = (a["median_ms"] / b["median_ms"] - 1) * 100
    return {**config, "compile_mode": config["mode"], "quantization": built.info.get("quantization"),
            "quantized_layers": built.info.get("quantized_layers"), "inductor_cache": built.info.get("inductor_cache"),
            "first_call_s": round(built.info["first_call_s"], 1), "compile_s": round(compile_s, 1),
            "cuda_graph": result.info["cuda_graph"], "graph_note": result.info["graph_note"],
            "verdict": result.info["verdict"], "sm_clock_median_mhz": result.info.get("sm_clock_median_mhz"),
            "throttled": result.info.get("throttled"), "pipeline": a, "independent": b, "median_diff_pct": diff,
            "tolerance_pct": tolerance, "agree": abs(diff) < tolerance, "plain_calls_no_graph": spread(plain)}


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
    parser.add_argument("--configs", default="resnet50:64:fp16,vit_b16:32:bf16",
                        help="model:batch:precision[:quantization[:compile[:cl]]],...")
    parser.add_argument("--new-modes", action="store_true", help=f"the int8/fp8 recipes and max-autotune: {NEW_MODES}")
    parser.add_argument("--mode", default="default", help="backend.compile: eager | default | max-autotune")
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--warmup-ms", type=float, default=200.0)
    parser.add_argument("--tolerance", type=float, default=TOLERANCE_PCT, help="percent")
    parser.add_argument("--cache-dir", type=Path, default=ROOT / "outputs/cache/shared",
                        help="torch.compile's caches (as cache.dir/shared in a job)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs/benchmarks/gpu_fidelity.json")
    args = parser.parse_args()
    import torch

    from pipeline.config import environment

    rows = []
    env = environment.capture()
    report = {"gpu": env["gpu"], "driver": env["driver"], "cuda_driver": env["cuda"], "torch": torch.__version__,
              "torch_cuda": torch.version.cuda, "tolerance_pct": args.tolerance,
              "command": "python benchmarks/gpu_fidelity.py " + " ".join(_args_without_out(sys.argv[1:])),
              "results": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for spec in (NEW_MODES if args.new_modes else args.configs).split(","):
        config = parse(spec, args.mode)
        try:
            row = measure(config, args.duration, args.warmup_ms, args.tolerance, args.cache_dir)
        except Exception as err:  # noqa: BLE001 - an unsupported point is reported, and the others still run
            rows.append({**config, "error": f"{type(err).__name__}: {str(err)[:500]}", "agree": False})
            print(f"{spec}: {rows[-1]['error']}", flush=True)
        else:
            rows.append(row)
            print(f"{spec}: pipeline {row['pipeline']['median_ms']:.4f} ms "
                  f"(p10 {row['pipeline']['p10_ms']:.4f}, p90 {row['pipeline']['p90_ms']:.4f}), independent "
                  f"{row['independent']['median_ms']:.4f} ms (p10 {row['independent']['p10_ms']:.4f}, "
                  f"p90 {row['independent']['p90_ms']:.4f}): {row['median_diff_pct']:+.2f} %  "
                  f"{'AGREE' if row['agree'] else 'DISAGREE'} (within {args.tolerance} %); plain calls without a "
                  f"graph {row['plain_calls_no_graph']['median_ms']:.4f} ms; {row['quantization']}, "
                  f"first call {row['first_call_s']} s", flush=True)
        args.out.write_text(json.dumps(report, indent=2, default=str) + "\n")  # as it goes: a cut-off run keeps it
    return 0 if rows and all(r["agree"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())

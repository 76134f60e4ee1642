"""ONNX Runtime's per-layer profile (the shared profile stage asks the opened build: stages/onnxruntime/opened.py):
per-node times from ORT's own profiler, into the `layers` table. On the CPU provider only: opened.py says why not on
a GPU provider.

It opens the built model in a session of its own with profiling on, after (never inside) the timed benchmark:
the profiler's bookkeeping slows every node, so its numbers say where the time goes, not how long an
inference takes. One warm-up inference is run first and left out: it pays allocation and weight prepacking.
ORT's raw trace (Chrome trace format, opens in Perfetto or chrome://tracing) is kept in the job's stage
directory as `onnxruntime_profile.json`; only the per-node aggregate goes into the tables.
"""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from stages import cpu_timing
from stages import inputs as model_inputs
from stages.onnxruntime import providers, session

TRACE_FILE = "onnxruntime_profile.json"
SOURCE = "onnxruntime-profiler"
_KERNEL_SUFFIX = "_kernel_time"  # ORT names a node's kernel event "<node name>_kernel_time"
WARMUP_RUNS = 1


def layers(model: Path, reference: Path, feeds: dict, seed: int, iterations: int, out_dir: Path
           ) -> tuple[list[dict], dict]:
    """The built model's per-node times over `iterations` inferences on seeded inputs (after one warm-up)."""
    import onnxruntime as ort

    settings = session.built_settings(model)
    opts = session.options(settings, level="ORT_DISABLE_ALL")  # as session.open_built: the graph is built
    opts.enable_profiling = True
    opts.profile_file_prefix = str(out_dir / "ort_profile")
    runner = session.Runner(ort.InferenceSession(str(model), opts, providers=[providers.NAMES["cpu"]]), model)
    sess = runner.sess
    specs = model_inputs.model_specs(reference, feeds)
    arrays = runner.cast(model_inputs.random_inputs(specs, model_inputs.sizes(feeds),
                                                    seed + model_inputs.SEED_BENCHMARK))
    with cpu_timing.exclusive():  # a measurement too: it takes turns with other jobs' on this host
        for _ in range(WARMUP_RUNS + iterations):
            sess.run(None, arrays)
    trace = out_dir / TRACE_FILE
    Path(sess.end_profiling()).replace(trace)
    rows = layer_rows(json.loads(trace.read_text()), iterations, skip_runs=WARMUP_RUNS)
    return rows, {"iterations": iterations, "layers": len(rows), "trace": TRACE_FILE}


def layer_rows(events: list[dict], iterations: int, *, skip_runs: int = 0) -> list[dict]:
    """Aggregate ORT's kernel events into one row per node: mean time per inference and share of all nodes.

    Events are assigned to inferences by the `model_run` session events that contain them, so the first
    `skip_runs` inferences (warm-up) are left out. Rows come in the order the nodes first ran.
    """
    runs = sorted((e["ts"], e["ts"] + e["dur"]) for e in events
                  if e.get("cat") == "Session" and e.get("name") == "model_run")
    start = runs[skip_runs][0] if len(runs) > skip_runs else float("inf")
    total_us: dict[str, float] = defaultdict(float)
    first: dict[str, dict] = {}
    for e in sorted((e for e in events if _is_kernel(e)), key=lambda e: e["ts"]):
        if e["ts"] < start:
            continue
        name = e["name"][:-len(_KERNEL_SUFFIX)]
        total_us[name] += e["dur"]
        first.setdefault(name, e.get("args", {}))
    everything = sum(total_us.values()) or 1.0
    return [{"layer": name, "layer_type": args.get("op_name", ""), "dtype": _output_dtype(args),
             "tactic": args.get("provider", ""), "stream": 0, "time_ms": total_us[name] / iterations / 1000.0,
             "share": total_us[name] / everything, "source": SOURCE}
            for name, args in first.items()]


def _is_kernel(event: dict) -> bool:
    return event.get("cat") == "Node" and str(event.get("name", "")).endswith(_KERNEL_SUFFIX)


def _output_dtype(args: dict) -> str:
    """ORT lists outputs as [{"float": [1, 32, 32, 32]}, ...]; the distinct element types, comma-joined."""
    types = [t for out in args.get("output_type_shape", []) if isinstance(out, dict) for t in out]
    return ",".join(dict.fromkeys(types))

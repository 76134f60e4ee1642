"""The benchmark stage of every backend but trtexec (which times itself): the build, opened by its backend
(stages/runtime.py), timed on seeded inputs by the host loop (stages/cpu_timing.py) or, on a GPU, by the harness
(stages/gpu/harness.py) inside the GPU session, with NVML watching (clocks, power, energy of the timed span)."""
from __future__ import annotations

from pathlib import Path

from stages import cpu_timing, runtime
from stages import inputs as model_inputs
from stages.api import StageResult
from stages.gpu import harness

VERSION = "1"
OUTPUTS = ()
CACHED = False  # a measurement is an observation: it runs every time
RUNTIME = True  # the runner hands it the backend's plugin and options (pipeline/run/runner.py)
crash_prone = runtime.crash_prone  # in a child process where the backend says so
PARAMS = {**runtime.STAGE_PARAMS, **harness.PARAMS, "until_stable": cpu_timing.PARAMS["until_stable"]}


def run(inputs: dict, params: dict, out_dir: Path) -> StageResult:
    rt = runtime.open_build(params["plugin"], inputs, params["options"], out_dir)
    try:
        specs, sizes = rt.specs(params["feeds"]), model_inputs.sizes(params["feeds"])
        seed = params["seed"] + model_inputs.SEED_BENCHMARK
        if rt.device == "cpu":
            return _on_host(rt, model_inputs.random_inputs(specs, sizes, seed), params)
        return _on_gpu(rt, specs, sizes, seed, params)
    finally:
        rt.close()


def _on_host(rt: runtime.Runtime, feeds: dict, params: dict) -> StageResult:
    call = rt.call(feeds)  # inputs made outside the timing context, as the lanes' are (torch: no inference tensors)
    with rt.timing():
        m = cpu_timing.measure(call, warmup_ms=params["warmup_ms"], duration_s=params["duration_s"],
                               min_iterations=params["min_iterations"], trials=params.get("trials"),
                               until_stable=params.get("until_stable"))
    tables, info = cpu_timing.tables(m, params["feeds"]["batch_size"])
    median = next(r["value"] for r in tables["summary"] if (r["metric"], r["stat"]) == ("latency", "median"))
    tables["summary"] += rt.cpu_rows(median)
    info.update(cuda_graph=False, cuda_graph_reason="host-timed: no CUDA graph on the CPU")
    return StageResult(info=info, tables=tables)


def _on_gpu(rt: runtime.Runtime, specs: list, sizes: dict, seed: int, params: dict) -> StageResult:
    import dataclasses

    from stages.gpu import measured, session

    lanes = rt.lanes(specs, sizes, seed, params["streams"])
    settings = harness.Settings.from_params(params)
    with session.exclusive(watch=True) as mon, rt.timing():
        graph, why = rt.cuda_graph(settings.cuda_graph, lanes)  # before any capture: a bad one can poison
        m = harness.run(lanes, dataclasses.replace(settings, cuda_graph=graph), hooks=(mon, *rt.hooks()))
    result = measured.stage_result(m, mon, params["feeds"]["batch_size"], **rt.measured(lanes))
    # every row says whether a graph was replayed and why: the up-front decision, or the harness's failed capture
    result.info["cuda_graph_reason"] = why if m.cuda_graph or not graph else m.graph_note or why
    return result

"""Benchmark stage for TensorRT: the engine timed by the cuda-python harness (stages.gpu.harness).

One execution context per inference stream (benchmark.streams), each with its own buffers holding seeded
inputs. The timed loop holds the per-GPU measurement lock, so concurrent jobs never measure each other, and
NVML samples clocks, power and temperature meanwhile (the `gpu` table), so a throttled run shows, and counts the
energy of the timed span. Memory comes from what the engine says (TensorRT allocates outside any allocator we could
ask): its weights, about the engine file's size, plus per context its device memory and I/O buffers
(stages/gpu/costs.py: `gpu_memory/*`, `artifact/engine`, `artifact/onnx_export`).
"""
from __future__ import annotations

from pathlib import Path

from stages import inputs as model_inputs
from stages.api import Param, StageResult
from stages.gpu import costs, harness, measured
from stages.tensorrt import runtime

VERSION = "2"  # 2: memory, artifact sizes and energy rows
OUTPUTS = ()
CACHED = False  # a measurement is an observation: it runs every time
PARAMS = {"feeds": Param(dict), "seed": Param(int), **harness.PARAMS}


def run(inputs: dict, params: dict, out_dir: Path) -> StageResult:
    from stages.gpu import session

    built = runtime.Engine(inputs["engine"])
    specs, sizes = model_inputs.model_specs(inputs["reference"], params["feeds"]), model_inputs.sizes(params["feeds"])
    shapes = built.input_shapes(specs, sizes)
    feeds = model_inputs.random_inputs(specs, sizes, params["seed"] + model_inputs.SEED_BENCHMARK)
    settings = harness.Settings.from_params(params)
    lanes = []
    try:
        for _ in range(params["streams"]):
            lanes.append(built.context(shapes))
            lanes[-1].write(feeds)
        io_bytes = sum(lane.io_bytes() for lane in lanes)
        with session.exclusive(watch=True) as mon:
            m = harness.run(lanes, settings, hooks=(mon,))
    finally:
        for lane in lanes:
            lane.close()
    info = built.info()
    rows, extra = memory_rows(info.get("device_memory_bytes"), len(lanes), io_bytes, inputs["engine"],
                              inputs["reference"])
    return measured.stage_result(m, mon, params["feeds"]["batch_size"], info={**info, **extra}, rows=rows)


def memory_rows(device_memory_bytes: int | None, contexts: int, io_bytes: int, engine: str | Path,
                reference: str | Path | None) -> tuple[list[dict], dict]:
    """`summary` rows of the engine's memory while timing and the artifacts' sizes, and the runs info beside them."""
    engine_bytes = costs.file_bytes(engine)
    memory = costs.tensorrt_memory(device_memory_bytes, contexts, io_bytes, engine_bytes)
    rows = [costs.memory_row(stat, value) for stat, value in memory.items()]
    rows.append(costs.artifact_row("engine", engine_bytes))
    if reference is not None and Path(reference).is_file():
        rows.append(costs.artifact_row("onnx_export", costs.file_bytes(reference)))  # the fp32 export
    info = {"peak_memory_mib": memory["peak_timed"] / costs.MIB,
            "memory_method": "engine weights (file size) + contexts x (device memory + I/O buffers)"}
    return rows, info

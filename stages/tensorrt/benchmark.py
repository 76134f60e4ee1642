"""Benchmark stage for TensorRT: the engine timed by the cuda-python harness (stages.gpu.harness).

One execution context per inference stream (benchmark.streams), each with its own buffers holding seeded
inputs. The timed loop holds the per-GPU measurement lock, so concurrent jobs never measure each other, and
NVML samples clocks, power and temperature meanwhile (the `gpu` table), so a throttled run shows.
"""
from __future__ import annotations

from pathlib import Path

from stages import inputs as model_inputs
from stages.api import Param, StageResult
from stages.gpu import harness, measured
from stages.tensorrt import runtime

VERSION = "1"
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
        with session.exclusive(watch=True) as mon:
            m = harness.run(lanes, settings)
    finally:
        for lane in lanes:
            lane.close()
    return measured.stage_result(m, mon, params["feeds"]["batch_size"], info=built.info())

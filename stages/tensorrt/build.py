"""Build stage for TensorRT: the converted ONNX graph into a serialized engine, with Polygraphy's loaders.

The precision is already in the graph (the convert stage's casts or Q/DQ nodes), so the network is parsed
strongly typed and no precision flag is ever set: TensorRT 11 removed them. TF32 is the one math switch left;
it is on for precision=tf32 and cleared for every other precision, so fp32 means IEEE fp32.

`plan()` and `loaders()` map our parameters to Polygraphy objects without building anything; they are pure
and tested on a CPU. The stage declares itself CRASH_PRONE, so the runner builds in a child process
(pipeline/run/isolation.py, `isolation.mode=auto`): a crash of the builder becomes a failed row with its signal,
not a lost job or a lost batch of jobs.
"""
from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from stages import api
from stages import inputs as model_inputs
from stages import tensorrt as trt_env
from stages.api import Param, StageInputError, StageResult, Unsupported
from stages.tensorrt import timing_cache as tc

VERSION = "2"  # 2: a profile for every named axis of every input (shapes.<axis>)
OUTPUTS = ("engine",)
CACHED = True
PARAMS = {"precision": Param(str), "tf32": Param(bool), "feeds": Param(dict), "shapes": Param(dict)}
# the backend's build options, handed over by the runner (typed in stages/tensorrt/__init__.py BUILD_OPTIONS)
BACKEND_OPTIONS = tuple(trt_env.BUILD_OPTIONS)
CRASH_PRONE = True  # the builder can segfault or exhaust memory: the runner isolates it
FILE = "model.engine"
QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
# Lowest compute capability with hardware support, per precision; below it the label would lie.
MIN_COMPUTE_CAPABILITY = {"fp8": (8, 9), "bf16": (8, 0), "tf32": (8, 0)}

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BuildPlan:
    """What the builder is asked for, in plain values (JSON-able: it travels to the child process)."""
    tf32: bool
    optimization_level: int
    max_aux_streams: int      # -1: not set, TensorRT's heuristic picks the number (0 forces a single stream)
    workspace_bytes: int | None  # None: TensorRT's default (the whole device)
    shapes: dict[str, list[list[int]]] = field(default_factory=dict)  # dynamic input -> [min, opt, max]


class Loaders(NamedTuple):
    network: Any       # polygraphy NetworkFromOnnxPath
    config: Any        # polygraphy CreateConfig
    engine_bytes: Any  # polygraphy EngineBytesFromNetwork: call it to build


def plan(params: dict, specs: list[model_inputs.InputSpec]) -> BuildPlan:
    """Our parameters as a build plan. The optimization profile gives every named axis of every input the range
    `shapes.<axis>` = [min, opt, max], or, for an axis not named there, the run's size alone; inputs whose dims are
    all fixed need no profile."""
    sizes = model_inputs.sizes(params["feeds"])
    model_inputs.check_sizes(specs, sizes)
    ranges = {axis: _axis_range(axis, sizes[axis], params.get("shapes") or {}) for s in specs for axis in s.axes()}
    shapes = {}
    for spec in specs:
        if spec.axes():
            shapes[spec.name] = [list(model_inputs.concrete_shape(spec, {a: r[i] for a, r in ranges.items()}))
                                 for i in range(3)]
    workspace_mb = params.get("workspace_mb") or 0
    return BuildPlan(tf32=bool(params["tf32"]), optimization_level=params["optimization_level"],
                     max_aux_streams=params["max_aux_streams"],
                     workspace_bytes=workspace_mb << 20 if workspace_mb > 0 else None, shapes=shapes)


def _axis_range(axis: str, size: int, ranges: dict) -> list[int]:
    if axis not in ranges:
        return [size, size, size]
    lo, opt, hi = ranges[axis]
    if not lo <= size <= hi:
        key = "batch_size" if axis == model_inputs.BATCH else f"axes.{axis}"
        raise StageInputError(f"{key} = {size} is outside shapes.{axis} = {ranges[axis]}: the engine would not "
                              f"accept the run's own size")
    return [lo, opt, hi]


def loaders(build_plan: BuildPlan, trt, onnx_path: str | Path, load_timing_cache: str | None = None,
            save_timing_cache: str | None = None) -> Loaders:
    """Polygraphy's lazy loaders for `build_plan`; `trt` supplies the enums. Nothing runs until the last is called."""
    from polygraphy.backend.trt import CreateConfig, EngineBytesFromNetwork, NetworkFromOnnxPath, Profile

    network = NetworkFromOnnxPath(str(onnx_path), strongly_typed=True)
    profiles = None
    if build_plan.shapes:
        profile = Profile()
        for name, (lo, opt, hi) in build_plan.shapes.items():
            profile.add(name, tuple(lo), tuple(opt), tuple(hi))
        profiles = [profile]
    pools = {trt.MemoryPoolType.WORKSPACE: build_plan.workspace_bytes} if build_plan.workspace_bytes else None
    # CreateConfig leaves max_aux_streams unset when it is None: -1 is ours for "let TensorRT choose".
    aux_streams = None if build_plan.max_aux_streams == -1 else build_plan.max_aux_streams
    # Never fp16=/bf16=/int8=/fp8=True: the precision is the graph's, and TensorRT 11 rejects those flags.
    config = CreateConfig(tf32=build_plan.tf32, builder_optimization_level=build_plan.optimization_level,
                          max_aux_streams=aux_streams, memory_pool_limits=pools, profiles=profiles,
                          profiling_verbosity=trt.ProfilingVerbosity.DETAILED, load_timing_cache=load_timing_cache)
    return Loaders(network, config, EngineBytesFromNetwork(network, config=config, save_timing_cache=save_timing_cache))


def refusal(precision: str, env: dict, qdq_nodes: int) -> str | None:
    """Why this precision cannot be built honestly here, or None."""
    if precision in ("int8", "fp8") and qdq_nodes == 0:
        return (f"precision={precision}: the ONNX graph has no QuantizeLinear/DequantizeLinear nodes; TensorRT "
                f"takes {precision} only from explicit Q/DQ (the convert stage inserts them with ModelOpt)")
    need = MIN_COMPUTE_CAPABILITY.get(precision)
    have = tuple(int(x) for x in env["compute_capability"].split("."))
    if need and have < need:
        return (f"precision={precision} needs a GPU of compute capability {need[0]}.{need[1]} or higher; "
                f"{env['gpu']} has {env['compute_capability']}")
    return None


def count_qdq(onnx_path: Path) -> int:
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    return sum(node.op_type in QDQ_OPS for node in model.graph.node)


def timing_identity(env: dict) -> dict:
    return {k: env[k] for k in ("gpu", "tensorrt", "cuda")}


def environment(params: dict) -> dict:
    return trt_env.environment()


def prepare(inputs: dict, params: dict, env: dict) -> tuple[Path, BuildPlan, tc.Store | None]:
    """What every TensorRT build (ours or trtexec's) starts with: the refusals, the plan, the timing cache store."""
    onnx_path = Path(inputs["onnx"])
    reason = refusal(params["precision"], env, count_qdq(onnx_path))
    if reason:
        raise Unsupported(reason)
    specs = model_inputs.resolve(model_inputs.specs_from_onnx(inputs["reference"]), params["feeds"])
    store = tc.Store(api.shared_dir(tc.SHARED_DIR), timing_identity(env)) if params["timing_cache"] else None
    return onnx_path, plan(params, specs), store


def run(inputs: dict, params: dict, out_dir: Path) -> StageResult:
    env = trt_env.environment()  # Unsupported first where TensorRT or the GPU is missing
    onnx_path, build_plan, store = prepare(inputs, params, env)
    trt = trt_env.import_trt()
    with tempfile.TemporaryDirectory(prefix="trt-build-") as scratch:
        session = store.open(Path(scratch)) if store else None
        log.info("build: TensorRT %s is building the engine on %s (timing cache %s); large models take minutes",
                 env["tensorrt"], env["gpu"], session.status if session else tc.OFF)
        built = loaders(build_plan, trt, onnx_path, session.load if session else None,
                        session.save if session else None)
        with open(out_dir / FILE, "wb") as f:
            f.write(built.engine_bytes())
        publish = store.publish(session, tc.trt_combine(trt)) if session else None
    return StageResult(outputs={"engine": FILE}, info={
        "engine_bytes": (out_dir / FILE).stat().st_size, "timing_cache": session.status if session else tc.OFF,
        "timing_cache_publish": publish, "tensorrt": env["tensorrt"], "gpu": env["gpu"],
        "compute_capability": env["compute_capability"], "tf32": build_plan.tf32,
        "cuda_bindings": trt_env.cuda_bindings(),  # what ran the build's CUDA calls; not in the key (gpu())
        "profile_shapes": json.dumps(build_plan.shapes) if build_plan.shapes else None})

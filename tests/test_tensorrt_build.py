"""The TensorRT build on a CPU: our parameters -> real Polygraphy loader objects (nothing is built), the
refusals, the shared timing-cache store, the trtexec command of the same plan, and what a machine without
TensorRT says (the loaders import TensorRT lazily, so all of this runs without it)."""
import json
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import onnx
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from onnx import TensorProto, helper

from pipeline import results
from pipeline.config import paths, schema
from stages import inputs as model_inputs
from stages.api import StageInputError, Unsupported
from stages.tensorrt import build
from stages.tensorrt import timing_cache as tc
from stages.trtexec import backend
from tests.conftest import FAST, run_cli

HAS_TENSORRT = __import__("importlib").util.find_spec("tensorrt") is not None


def config(*overrides, backend="tensorrt"):
    schema.register()  # the `schema` node conf/config.yaml builds on
    with initialize_config_dir(config_dir=paths.CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"backend={backend}", *overrides])
    return OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)


def build_params(*overrides, backend="tensorrt"):
    """The build node's params exactly as the stage receives them: the DAG's, and the backend's options the runner
    hands it (BACKEND_OPTIONS)."""
    from pipeline.run import runner

    backend_config = config(*overrides, backend=backend)["backend"]
    return next(n for n in runner.plan(backend_config["dag"], backend_config) if n.name == "build").params


SPECS = [model_inputs.InputSpec("input", ("batch", 3, 32, 32), np.dtype("float32"))]


@pytest.fixture(scope="module")
def lean():
    return pytest.importorskip("tensorrt_lean_bindings")  # its enums are TensorRT's; it cannot build anything


# ------------------------------------------------------------------------------------------- the plan

def test_dag_params_become_the_plan():
    params = build_params("batch_size=8", "shapes.batch=[1,8,32]",
                          "backend.optimization_level=5", "backend.max_aux_streams=2", "backend.workspace_mb=512",
                          "precision=tf32")
    assert "cache_dir" not in params and params["timing_cache"] is True
    p = build.plan(params, SPECS)
    assert p == build.BuildPlan(tf32=True, optimization_level=5, max_aux_streams=2, workspace_bytes=512 << 20,
                                shapes={"input": [[1, 3, 32, 32], [8, 3, 32, 32], [32, 3, 32, 32]]})


@pytest.mark.parametrize("precision", ["fp32", "fp16", "bf16", "int8", "fp8"])
def test_only_the_tf32_arm_keeps_tf32(precision):
    assert build.plan(build_params(f"precision={precision}"), SPECS).tf32 is False


def test_profile_defaults_to_batch_size_and_workspace_to_tensorrt():
    p = build.plan(build_params("batch_size=4"), SPECS)
    assert p.shapes == {"input": [[4, 3, 32, 32]] * 3} and p.workspace_bytes is None


def test_every_named_axis_of_every_input_gets_a_profile():
    specs = [model_inputs.InputSpec("ids", ("batch", "sequence"), np.dtype("int64")),
             model_inputs.InputSpec("mask", ("batch", "sequence"), np.dtype("int64")),
             model_inputs.InputSpec("scale", (1,), np.dtype("float32"))]
    p = build.plan(build_params("batch_size=2", "axes.sequence=128", "shapes.sequence=[16,128,512]"), specs)
    assert p.shapes == {"ids": [[2, 16], [2, 128], [2, 512]], "mask": [[2, 16], [2, 128], [2, 512]]}
    with pytest.raises(StageInputError, match=r"axes.sequence = 600 is outside shapes.sequence = \[16, 128, 512\]"):
        build.plan(build_params("batch_size=2", "axes.sequence=600", "shapes.sequence=[16,128,512]"), specs)
    with pytest.raises(StageInputError, match="has the axis 'sequence' .* set axes.sequence=N"):
        build.plan(build_params("batch_size=2"), specs)


def test_static_inputs_need_no_profile():
    static = [model_inputs.InputSpec("x", (1, 3, 32, 32), np.dtype("float32"))]
    assert build.plan(build_params(), static).shapes == {}
    with pytest.raises(StageInputError, match="fixed batch axis of 1: set batch_size=1"):
        build.plan(build_params("batch_size=4"), static)


@pytest.mark.parametrize("backend, order", [
    ("tensorrt", ["export", "convert", "build", "benchmark", "profile", "validate"]),
    ("trtexec", ["export", "convert", "build", "benchmark", "validate"])])
def test_backend_dags_are_valid_and_profile_after_the_timed_loop(backend, order):
    from pipeline.run import runner

    backend_config = config(backend=backend)["backend"]
    assert [n.name for n in runner.plan(backend_config["dag"], backend_config)] == order


def test_trtexec_backend_builds_from_the_same_plan():
    args = ("batch_size=8", "shapes.batch=[1,8,32]", "backend.workspace_mb=64", "precision=tf32")
    trtexec = build_params(*args, backend="trtexec")
    assert trtexec["path"] == "trtexec" and trtexec["extra_args"] == []
    assert build.plan(trtexec, SPECS) == build.plan(build_params(*args), SPECS)


def test_plan_survives_the_trip_to_the_build_process():
    p = build.plan(build_params("batch_size=8", "shapes.batch=[8,8,16]"), SPECS)
    assert build.BuildPlan(**json.loads(json.dumps(asdict(p)))) == p


# ------------------------------------------------------------------------------------------- Polygraphy loaders

def test_loaders_are_real_polygraphy_objects_with_our_settings(lean, tmp_path):
    p = build.plan(build_params("batch_size=8", "shapes.batch=[2,8,16]", "backend.workspace_mb=256",
                                "backend.optimization_level=4", "backend.max_aux_streams=3"), SPECS)
    loaders = build.loaders(p, lean, tmp_path / "m.onnx", load_timing_cache="in.cache", save_timing_cache="out.cache")
    from polygraphy.backend.trt import CreateConfig, EngineBytesFromNetwork, NetworkFromOnnxPath

    net, cfg, engine_bytes = loaders
    assert isinstance(net, NetworkFromOnnxPath) and isinstance(cfg, CreateConfig)
    assert isinstance(engine_bytes, EngineBytesFromNetwork)
    assert net.strongly_typed is True and net.path == str(tmp_path / "m.onnx")
    assert cfg.tf32 is False
    assert (cfg.fp16, cfg.bf16, cfg.int8, cfg.fp8) == (False, False, False, False)  # TRT 11 has no such flags
    assert cfg.builder_optimization_level == 4 and cfg.max_aux_streams == 3
    assert cfg.memory_pool_limits == {lean.MemoryPoolType.WORKSPACE: 256 << 20}
    assert cfg.profiling_verbosity == lean.ProfilingVerbosity.DETAILED
    shape = cfg.profiles[0]["input"]
    assert (shape.min, shape.opt, shape.max) == ((2, 3, 32, 32), (8, 3, 32, 32), (16, 3, 32, 32))
    assert cfg.timing_cache_path == "in.cache" and engine_bytes.timing_cache_path == "out.cache"
    assert engine_bytes._network is net and engine_bytes._config is cfg
    assert "tensorrt" not in sys.modules or HAS_TENSORRT  # constructing them imported nothing


def test_loaders_for_tf32_without_pool_or_profile(lean, tmp_path):
    static = [model_inputs.InputSpec("x", (1, 3, 32, 32), np.dtype("float32"))]
    _, cfg, engine_bytes = build.loaders(build.plan(build_params("precision=tf32"), static), lean, tmp_path / "m.onnx")
    assert cfg.tf32 is True and cfg.memory_pool_limits is None
    assert len(cfg.profiles) == 1 and not cfg.profiles[0]  # Polygraphy's default: one empty profile
    assert cfg.timing_cache_path is None and engine_bytes.timing_cache_path is None


def test_minus_one_aux_streams_leaves_the_choice_to_tensorrt(lean, tmp_path):
    """CreateConfig sets config.max_aux_streams only when it is not None (polygraphy/backend/trt/config.py)."""
    p = build.plan({**build_params(), "max_aux_streams": -1}, SPECS)
    assert p.max_aux_streams == -1
    _, cfg, _ = build.loaders(p, lean, tmp_path / "m.onnx")
    assert cfg.max_aux_streams is None
    _, cfg, _ = build.loaders(build.plan({**build_params(), "max_aux_streams": 0}, SPECS), lean, tmp_path / "m.onnx")
    assert cfg.max_aux_streams == 0  # 0 is a real setting: one stream


def test_trtexec_gets_the_same_plan(tmp_path):
    p = build.plan(build_params("batch_size=8", "shapes.batch=[8,8,16]", "backend.workspace_mb=1024",
                                "backend.optimization_level=2", "backend.max_aux_streams=1"), SPECS)
    cmd = backend.build_command("trtexec", Path("m.onnx"), Path("m.engine"), p, major=11)
    assert "--builderOptimizationLevel=2" in cmd and "--maxAuxStreams=1" in cmd
    assert "--memPoolSize=workspace:1024M" in cmd and "--noTF32" in cmd
    assert "--minShapes=input:8x3x32x32" in cmd and "--maxShapes=input:16x3x32x32" in cmd


# ------------------------------------------------------------------------------------------- refusals

GPU = {"gpu": "NVIDIA A100-SXM4-80GB", "compute_capability": "8.0"}


@pytest.mark.parametrize("precision, env, qdq, words", [
    ("fp8", GPU, 12, ["precision=fp8", "8.9", "A100", "8.0"]),
    ("fp8", {**GPU, "compute_capability": "7.5"}, 12, ["8.9", "7.5"]),
    ("bf16", {**GPU, "compute_capability": "7.5"}, 0, ["bf16", "8.0", "7.5"]),
    ("tf32", {**GPU, "compute_capability": "7.0"}, 0, ["tf32", "8.0"]),
    ("int8", GPU, 0, ["int8", "QuantizeLinear/DequantizeLinear", "convert"]),
    ("fp8", {**GPU, "compute_capability": "9.0"}, 0, ["fp8", "Q/DQ"]),
])
def test_refusals_say_why(precision, env, qdq, words):
    reason = build.refusal(precision, env, qdq)
    assert reason is not None
    for word in words:
        assert word in reason


@pytest.mark.parametrize("precision, cc, qdq", [("fp8", "8.9", 4), ("fp8", "9.0", 4), ("int8", "7.5", 4),
                                                 ("fp16", "7.5", 0), ("fp32", "7.5", 0), ("bf16", "8.0", 0),
                                                 ("tf32", "12.0", 0)])
def test_supported_combinations_pass(precision, cc, qdq):
    assert build.refusal(precision, {**GPU, "compute_capability": cc}, qdq) is None


def test_qdq_nodes_are_counted(tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    inits = [helper.make_tensor("s", TensorProto.FLOAT, [], [0.1]), helper.make_tensor("z", TensorProto.INT8, [], [0])]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["d"]), helper.make_node("Relu", ["d"], ["y"])]
    onnx.save(helper.make_model(helper.make_graph(nodes, "g", [x], [y], inits)), tmp_path / "q.onnx")
    onnx.save(helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])),
              tmp_path / "plain.onnx")
    assert build.count_qdq(tmp_path / "q.onnx") == 2 and build.count_qdq(tmp_path / "plain.onnx") == 0


# ------------------------------------------------------------------------------------------- timing cache store

IDENTITY = {"gpu": "NVIDIA H100 80GB HBM3", "tensorrt": "11.1.0", "cuda": "13.0"}


def build_once(store, scratch, content, publish_with=None):
    session = store.open(scratch)
    Path(session.save).write_bytes(content)  # what the builder would save
    return session, store.publish(session, publish_with)


def test_first_build_creates_and_the_next_one_loads(tmp_path):
    store = tc.Store(tmp_path / "cache", IDENTITY)
    first, outcome = build_once(store, tmp_path / "a", b"v1")
    assert (first.status, first.load, outcome) == (tc.CREATED, None, "replaced")
    assert store.file.read_bytes() == b"v1"
    assert store.file.parent.parent == tmp_path / "cache"
    assert json.loads((store.dir / "identity.json").read_text()) == IDENTITY
    second = store.open(tmp_path / "b")
    assert second.status == tc.LOADED and Path(second.load).read_bytes() == b"v1"
    assert Path(second.load).parent == tmp_path / "b"  # the build reads a snapshot, never the shared file


def test_each_identity_has_its_own_cache(tmp_path):
    a = tc.Store(tmp_path, IDENTITY)
    b = tc.Store(tmp_path, {**IDENTITY, "tensorrt": "10.16.0"})
    c = tc.Store(tmp_path, {**IDENTITY, "gpu": "NVIDIA L4"})
    assert len({a.file, b.file, c.file}) == 3
    assert len(a.dir.name) == 64  # a full sha256


def test_a_concurrent_publish_is_merged_not_overwritten(tmp_path):
    store = tc.Store(tmp_path / "cache", IDENTITY)
    build_once(store, tmp_path / "seed", b"base")
    one, two = store.open(tmp_path / "one"), store.open(tmp_path / "two")  # both start from "base"
    Path(one.save).write_bytes(b"base+one")
    Path(two.save).write_bytes(b"base+two")
    assert store.publish(one, None) == "replaced"
    merged = []

    def merge(shared, built):  # stands in for ITimingCache.combine: keeps both sides' entries
        merged.append((shared, built))
        return shared + b"|" + built
    assert store.publish(two, merge) == "merged"
    assert merged == [(b"base+one", b"base+two")] and store.file.read_bytes() == b"base+one|base+two"


def test_without_a_merge_the_newer_cache_wins_and_a_failed_merge_keeps_the_shared_one(tmp_path):
    store = tc.Store(tmp_path / "cache", IDENTITY)
    one, two, three = (store.open(tmp_path / n) for n in ("1", "2", "3"))
    for s, data in ((one, b"one"), (two, b"two"), (three, b"three")):
        Path(s.save).write_bytes(data)
    store.publish(one, None)
    assert store.publish(two, None).startswith("replaced (changed meanwhile")
    assert store.file.read_bytes() == b"two"

    def broken(shared, built):
        raise RuntimeError("mismatch")
    assert "merge failed" in store.publish(three, broken) and store.file.read_bytes() == b"two"


def test_nothing_built_publishes_nothing(tmp_path):
    store = tc.Store(tmp_path / "cache", IDENTITY)
    assert store.publish(store.open(tmp_path), None) == "nothing to publish" and not store.file.exists()


def test_store_lock_is_not_polygraphys_lock_file(tmp_path):
    store = tc.Store(tmp_path, IDENTITY)
    assert Path(store.lock.lock_file).name != tc.FILE + ".lock"  # Polygraphy's LockFile takes "<file>.lock"


# ------------------------------------------------------------------------------------------- without TensorRT

@pytest.mark.skipif(HAS_TENSORRT, reason="TensorRT is installed here")
def test_build_stage_is_unsupported_before_anything_else(tmp_path):
    for call in (lambda: build.environment({}), lambda: build.run({"onnx": tmp_path / "missing.onnx"}, {}, tmp_path)):
        with pytest.raises(Unsupported) as err:
            call()
        message = str(err.value)
        assert "TensorRT is not installed" in message and "nvcr.io/nvidia/tensorrt" in message
        assert "pypi.nvidia.com" in message


def test_build_declares_itself_crash_prone():
    from pipeline.run.runner import Isolation

    assert build.CRASH_PRONE and Isolation("auto").applies(build) and not Isolation("none").applies(build)


@pytest.mark.slow
@pytest.mark.skipif(HAS_TENSORRT, reason="TensorRT is installed here")
def test_cli_backend_tensorrt_here_is_an_unsupported_row(workdir):
    proc = run_cli(["backend=tensorrt", *FAST], workdir)
    assert proc.returncode == 3, proc.stdout[-2000:] + proc.stderr[-2000:]  # nothing ran (unsupported), none failed
    run = results.load(workdir / "outputs").runs.iloc[0]
    assert (run.status, run.backend) == ("unsupported", "tensorrt")
    for words in ("tensorrt is not installed", "nvcr.io/nvidia/tensorrt",
                  "pip install tensorrt --extra-index-url https://pypi.nvidia.com", "Backends that run here:",
                  "onnxruntime"):
        assert words in run.error, run.error

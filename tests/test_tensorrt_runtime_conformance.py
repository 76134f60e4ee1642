"""Every TensorRT name our code touches exists in the real bindings.

The names are not listed by hand: the test reads the source of stages/tensorrt/ with `ast` and collects each
attribute used on a TensorRT object (stages/tensorrt/__init__.py: such objects are always held in variables
named after them: `trt`, `engine`, `ctx`, ...), so the check follows the code. They are checked against the
runtime-only bindings that install from the public index (`tensorrt_lean_bindings`, TensorRT 11.x): Runtime,
ICudaEngine, IExecutionContext, IProfiler, DataType and the enums are all there. The builder (Builder,
IBuilderConfig) and EngineInspector are not bound in the lean module; for those the names are checked against
what NVIDIA/TensorRT v11.1 python/src/infer/pyCore.cpp binds (EngineInspector only under EXPORT_ALL_BINDINGS).
"""
import ast
from pathlib import Path

import pytest

trt = pytest.importorskip("tensorrt_lean_bindings")

from stages.tensorrt import profile, runtime  # noqa: E402

PACKAGE = Path(__file__).resolve().parent.parent / "stages" / "tensorrt"
# variable name -> the lean module's class (None: the module itself)
RECEIVERS = {"trt": None, "trt_runtime": "Runtime", "engine": "ICudaEngine", "ctx": "IExecutionContext",
             "dtype": "DataType", "timing_cache": "ITimingCache", "engine_inspector": "EngineInspector",
             "builder": "Builder", "builder_config": "IBuilderConfig"}
# Not in the lean bindings: what pyCore.cpp (v11.1) binds on them, among what our code could need.
SOURCE_ONLY = {
    "EngineInspector": {"execution_context", "get_layer_information", "get_engine_information", "error_recorder"},
    "Builder": {"create_builder_config", "create_network", "build_serialized_network", "create_optimization_profile"},
    "IBuilderConfig": {"create_timing_cache", "set_timing_cache", "get_timing_cache", "set_flag", "clear_flag",
                       "get_flag", "set_memory_pool_limit", "builder_optimization_level", "max_aux_streams",
                       "profiling_verbosity", "add_optimization_profile"},
}
# What the runtime must use (the list): the scan has to find each, or the naming rule was broken.
REQUIRED = {
    ("Runtime", "deserialize_cuda_engine"), ("ICudaEngine", "num_io_tensors"), ("ICudaEngine", "get_tensor_name"),
    ("ICudaEngine", "get_tensor_mode"), ("ICudaEngine", "get_tensor_shape"), ("ICudaEngine", "get_tensor_dtype"),
    ("ICudaEngine", "get_tensor_profile_shape"), ("ICudaEngine", "num_aux_streams"),
    ("ICudaEngine", "device_memory_size_v2"), ("ICudaEngine", "create_execution_context"),
    ("ICudaEngine", "create_engine_inspector"), ("IExecutionContext", "set_input_shape"),
    ("IExecutionContext", "set_tensor_address"), ("IExecutionContext", "execute_async_v3"),
    ("IExecutionContext", "set_aux_streams"), ("IExecutionContext", "infer_shapes"),
    ("IExecutionContext", "get_tensor_shape"), ("IExecutionContext", "enqueue_emits_profile"),
    ("IExecutionContext", "report_to_profiler"), ("IExecutionContext", "profiler"), ("DataType", "itemsize"),
    ("module", "IProfiler"), ("module", "TensorIOMode.INPUT"), ("module", "LayerInformationFormat.JSON"),
    ("module", "Runtime"), ("module", "Logger.WARNING"), ("module", "MemoryPoolType.WORKSPACE"),
    ("module", "ProfilingVerbosity.DETAILED"), ("EngineInspector", "execution_context"),
    ("EngineInspector", "get_engine_information"), ("ICudaEngine", "get_tensor_location"),
    ("module", "TensorLocation.HOST"),
}


def chain(node: ast.AST) -> list[str] | None:
    """`self.engine.get_tensor_name` -> ['self', 'engine', 'get_tensor_name']; None when it starts with a call."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    return [node.id, *reversed(parts)]


def uses(source: str) -> set[tuple[str, str]]:
    """(class, dotted attribute) for every attribute used on a TensorRT object in `source`."""
    tree = ast.parse(source)
    inner = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    found = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute) or id(node) in inner:
            continue
        parts = chain(node)
        if not parts:
            continue
        at = max((i for i, p in enumerate(parts) if p in RECEIVERS), default=None)
        if at is None or at == len(parts) - 1:
            continue
        cls = RECEIVERS[parts[at]] or "module"
        found.add((cls, ".".join(parts[at + 1:])))
    return found


def code_uses() -> set[tuple[str, str]]:
    return set().union(*(uses(f.read_text()) for f in sorted(PACKAGE.glob("*.py"))))


def missing(found: set[tuple[str, str]]) -> list[str]:
    bad = []
    for cls, dotted in sorted(found):
        if cls == "module" and dotted.split(".")[0] in SOURCE_ONLY:  # e.g. trt.Builder(...)
            cls, dotted = dotted.split(".")[0], ".".join(dotted.split(".")[1:]) or "__init__"
        if cls in SOURCE_ONLY:
            if dotted == "__init__":
                continue
            if dotted.split(".")[0] not in SOURCE_ONLY[cls]:
                bad.append(f"{cls}.{dotted}")
            continue
        obj = trt if cls == "module" else getattr(trt, cls, None)
        for part in dotted.split("."):
            obj = getattr(obj, part, None)
        if obj is None:
            bad.append(f"{cls}.{dotted}")
    return bad


def test_every_tensorrt_name_in_the_code_exists_in_the_bindings():
    found = code_uses()
    assert not missing(found), f"not in TensorRT {trt.__version__}: {missing(found)}"


def test_the_scan_sees_what_the_runtime_needs():
    found = code_uses()
    assert REQUIRED <= found, f"the scan no longer finds {sorted(REQUIRED - found)}: a TensorRT object renamed?"


def test_the_check_fails_on_names_tensorrt_11_removed():
    snippet = ("n = engine.device_memory_size\nctx.execute_async_v2([], 0)\nengine.get_binding_name(0)\n"
               "builder.platform_has_fast_fp16\ntrt.BuilderFlag.FP16\n")
    assert missing(uses(snippet)) == ["Builder.platform_has_fast_fp16", "ICudaEngine.device_memory_size",
                                      "ICudaEngine.get_binding_name", "IExecutionContext.execute_async_v2",
                                      "module.BuilderFlag.FP16"]


def test_classes_checked_against_the_source_are_really_absent_from_the_lean_bindings():
    # If a later lean release binds them, move them out of SOURCE_ONLY so they are checked for real.
    for cls in SOURCE_ONLY:
        assert not hasattr(trt, cls), f"{cls} is bound now: check it directly"


def test_profiler_subclass_is_a_real_iprofiler():
    recorder = profile.recorder(trt)
    assert isinstance(recorder, trt.IProfiler)
    own = {name for name, value in vars(type(recorder)).items() if callable(value) and not name.startswith("_")}
    assert own == {"report_layer_time"} and hasattr(trt.IProfiler, "report_layer_time")
    for name, ms in (("conv", 0.5), ("fc", 0.25), ("conv", 0.7)):
        recorder.report_layer_time(name, ms)
    assert recorder.total_ms == pytest.approx({"conv": 1.2, "fc": 0.25})


@pytest.mark.parametrize("name, numpy, itemsize", [("FLOAT", "float32", 4), ("HALF", "float16", 2),
                                                    ("BF16", "bfloat16", 2), ("FP8", "float8_e4m3fn", 1),
                                                    ("INT8", "int8", 1), ("INT32", "int32", 4), ("INT64", "int64", 8),
                                                    ("BOOL", "bool", 1), ("UINT8", "uint8", 1)])
def test_sizes_from_itemsize_and_numpy_types(name, numpy, itemsize):
    dtype = getattr(trt.DataType, name)
    assert runtime.numpy_dtype(dtype).name == numpy and runtime.numpy_dtype(dtype).itemsize == itemsize
    assert runtime.nbytes((8, 3, 32, 32), dtype) == 8 * 3 * 32 * 32 * itemsize


def test_four_bit_types_have_sizes_but_no_numpy_type():
    for name in ("INT4", "FP4"):
        dtype = getattr(trt.DataType, name)
        assert runtime.numpy_dtype(dtype) is None
        assert runtime.nbytes((3,), dtype) == 2  # 1.5 bytes, rounded up


def test_block_scale_types_are_refused_clearly():
    lean = pytest.importorskip("tensorrt_lean_bindings")
    from stages.api import Unsupported
    from stages.tensorrt import runtime

    e8m0 = getattr(lean.DataType, "E8M0", None)
    if e8m0 is None or e8m0.itemsize is not None:
        pytest.skip("these bindings have no size-less E8M0")
    with pytest.raises(Unsupported, match="E8M0"):
        runtime.nbytes((4, 4), e8m0)
    assert runtime.nbytes((8,), lean.DataType.INT4) == 4 and runtime.nbytes((2, 3), lean.DataType.BF16) == 12

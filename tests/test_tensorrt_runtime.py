"""stages/tensorrt/runtime.py and the CUDA identity in the cache keys, on a CPU: a fake `tensorrt` module and a
fake cuda-python runtime stand in for the real ones, so the order of calls and the data paths can be checked.
Names and signatures of the fakes follow the real bindings (tests/test_tensorrt_runtime_conformance.py checks the
names our code uses against tensorrt_lean_bindings)."""
from __future__ import annotations

import ctypes
import itertools
from types import SimpleNamespace

import numpy as np
import pytest

import stages.tensorrt as trt_env
from stages.api import Unsupported
from stages.gpu import cuda
from stages.tensorrt import build, runtime

OK = "cudaSuccess"
FLOAT = SimpleNamespace(name="FLOAT", itemsize=4)
INT64 = SimpleNamespace(name="INT64", itemsize=8)


class FakeCuda:
    """Device memory as a dict of bytes; host memory is real (numpy arrays), read and written through ctypes."""
    cudaError_t = SimpleNamespace(cudaSuccess=OK)
    cudaMemcpyKind = SimpleNamespace(cudaMemcpyHostToDevice="H2D", cudaMemcpyDeviceToHost="D2H")
    cudaStreamNonBlocking = 1

    def __init__(self):
        self.device: dict[int, bytes] = {}
        self.freed: list[int] = []
        self._next = itertools.count(1 << 44)  # addresses no host pointer has

    def cudaMalloc(self, n):
        ptr = next(self._next) * 4096
        self.device[ptr] = bytes(n)
        return OK, ptr

    def cudaMemcpy(self, dst, src, n, kind):
        if kind == "H2D":
            assert dst in self.device, "H2D into something that is not device memory"
            self.device[dst] = ctypes.string_at(src, n)
        else:
            assert src in self.device, "D2H from something that is not device memory"
            ctypes.memmove(dst, self.device[src], n)
        return (OK,)

    def cudaFree(self, ptr):
        assert ptr in self.device, f"cudaFree of {ptr:#x}, which cudaMalloc never returned"
        self.freed.append(ptr)
        return (OK,)

    def cudaDeviceSynchronize(self):
        return (OK,)

    def cudaStreamSynchronize(self, stream):
        return (OK,)


@pytest.fixture
def fake_cuda(monkeypatch):
    fake = FakeCuda()
    monkeypatch.setattr(cuda, "rt", lambda: fake)      # what stages.gpu.cuda.call uses
    monkeypatch.setattr(runtime, "rt", lambda: fake)   # runtime's own reference
    return fake


class FakeContext:
    """y = x * sum(dims): x and y in device memory, dims (a shape-tensor-like input) in host memory."""

    def __init__(self, engine, cuda_fake):
        self.engine, self.cuda = engine, cuda_fake
        self.addresses: dict[str, int] = {}
        self.shapes: dict[str, tuple] = {}
        self.infer_calls = 0

    def set_input_shape(self, name, shape):
        self.shapes[name] = tuple(shape)
        return True

    def infer_shapes(self):
        self.infer_calls += 1
        return [name for name, (mode, *_rest, where) in self.engine.table.items()
                if mode == "in" and where == "host" and name not in self.addresses]  # TensorRT's rule

    def get_tensor_shape(self, name):
        return self.engine.table[name][1]

    def set_tensor_address(self, name, ptr):
        self.addresses[name] = ptr
        return True

    def execute_async_v3(self, stream):
        dims = np.frombuffer(ctypes.string_at(self.addresses["dims"], 16), dtype=np.int64)  # read on the host
        x = np.frombuffer(self.cuda.device[self.addresses["x"]], dtype=np.float32)
        self.cuda.device[self.addresses["y"]] = (x * dims.sum()).astype(np.float32).tobytes()
        return True


class FakeEngine:
    def __init__(self, cuda_fake):
        self.cuda = cuda_fake
        # name -> (mode, shape, dtype, location)
        self.table = {"dims": ("in", (2,), INT64, "host"), "x": ("in", (2, 3), FLOAT, "device"),
                      "y": ("out", (2, 3), FLOAT, "device")}
        self.num_io_tensors, self.num_aux_streams, self.num_layers = 3, 0, 1
        self.contexts: list[FakeContext] = []

    def get_tensor_name(self, i):
        return list(self.table)[i]

    def get_tensor_mode(self, name):
        return self.table[name][0]

    def get_tensor_shape(self, name):
        return self.table[name][1]

    def get_tensor_dtype(self, name):
        return self.table[name][2]

    def get_tensor_location(self, name):
        return self.table[name][3]

    def create_execution_context(self):
        self.contexts.append(FakeContext(self, self.cuda))
        return self.contexts[-1]


def fake_trt(engine, calls: list, plugins: bool = True):
    class Logger:
        WARNING = "warning"

        def __init__(self, severity):
            self.severity = severity

    class Runtime:
        def __init__(self, logger):
            calls.append(("runtime", logger))

        def deserialize_cuda_engine(self, data):
            calls.append(("deserialize", data))
            return engine

    module = SimpleNamespace(Logger=Logger, Runtime=Runtime, TensorIOMode=SimpleNamespace(INPUT="in", OUTPUT="out"),
                             TensorLocation=SimpleNamespace(DEVICE="device", HOST="host"))
    if plugins:
        module.init_libnvinfer_plugins = lambda logger, namespace: calls.append(("plugins", logger, namespace))
    return module


@pytest.fixture
def engine_file(tmp_path):
    path = tmp_path / "model.engine"
    path.write_bytes(b"plan")
    return path


def open_engine(monkeypatch, engine_file, fake_cuda, plugins=True):
    calls: list = []
    engine = FakeEngine(fake_cuda)
    monkeypatch.setattr(trt_env, "import_trt", lambda: fake_trt(engine, calls, plugins))
    return runtime.Engine(engine_file), engine, calls


# ------------------------------------------------------------------------------------------- plugins (15)

def test_standard_plugins_are_registered_before_the_engine_is_deserialized(monkeypatch, engine_file, fake_cuda):
    built, _, calls = open_engine(monkeypatch, engine_file, fake_cuda)
    assert [c[0] for c in calls] == ["plugins", "runtime", "deserialize"]
    assert calls[0][1] is built.logger and calls[0][2] == ""  # TensorRT's own namespace
    assert calls[2][1] == b"plan"


def test_a_runtime_without_the_plugin_library_still_deserializes(monkeypatch, engine_file, fake_cuda):
    # the lean runtime module binds no init_libnvinfer_plugins (pyPlugin.cpp: only with EXPORT_ALL_BINDINGS)
    lean = pytest.importorskip("tensorrt_lean_bindings")
    assert not hasattr(lean, "init_libnvinfer_plugins")
    built, _, calls = open_engine(monkeypatch, engine_file, fake_cuda, plugins=False)
    assert [c[0] for c in calls] == ["runtime", "deserialize"] and built.engine is not None


# ------------------------------------------------------------------------------------------- device memory (19)

def engine_info(**attributes):
    built = runtime.Engine.__new__(runtime.Engine)  # only info() is under test: no deserialization
    built.engine = SimpleNamespace(num_aux_streams=2, num_layers=7, **attributes)
    return built.info()


def test_device_memory_size_v2_is_used_from_tensorrt_10_1():
    assert engine_info(device_memory_size_v2=1 << 20, device_memory_size=1) == {
        "aux_streams": 2, "device_memory_bytes": 1 << 20, "engine_layers": 7}


def test_tensorrt_10_0_falls_back_to_device_memory_size():
    assert engine_info(device_memory_size=4096)["device_memory_bytes"] == 4096


# ------------------------------------------------------------------------------------------- host tensors (23)

def test_host_tensors_get_host_buffers_and_round_trip(monkeypatch, engine_file, fake_cuda):
    built, engine, _ = open_engine(monkeypatch, engine_file, fake_cuda)
    assert [(t.name, t.on_host) for t in built.tensors] == [("dims", True), ("x", False), ("y", False)]
    lane = built.context({"dims": (2,), "x": (2, 3)})
    ctx = engine.contexts[0]
    dims_address = ctx.addresses["dims"]
    assert dims_address == lane.host["dims"].ctypes.data  # a numpy array's address, not cudaMalloc's
    assert dims_address not in fake_cuda.device and set(fake_cuda.device) == {ctx.addresses["x"], ctx.addresses["y"]}
    ins, outs = lane.buffers()
    assert [b.ptr for b in ins] == [ctx.addresses["x"]] and [b.ptr for b in outs] == [ctx.addresses["y"]]
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    got = lane.infer({"dims": np.array([2, 3]), "x": x}, stream=0)
    np.testing.assert_array_equal(got["y"], x * 5)  # the context read dims on the host, x on the "device"
    assert ctx.addresses["dims"] == dims_address  # written in place: TensorRT keeps the address it was given
    lane.close()
    assert sorted(fake_cuda.freed) == sorted([ctx.addresses["x"], ctx.addresses["y"]])  # no cudaFree of host memory


def test_a_host_input_is_bound_before_shape_inference(monkeypatch, engine_file, fake_cuda):
    built, engine, _ = open_engine(monkeypatch, engine_file, fake_cuda)
    built.context({"dims": (2,), "x": (2, 3)})  # the fake's infer_shapes reports an unbound host input
    assert engine.contexts[0].infer_calls == 1


def test_host_input_values_that_change_the_shapes_are_refused(monkeypatch, engine_file, fake_cuda):
    built, engine, _ = open_engine(monkeypatch, engine_file, fake_cuda)
    lane = built.context({"dims": (2,), "x": (2, 3)})
    engine.table["y"] = ("out", (4, 3), FLOAT, "device")  # what new dims values would make TensorRT infer
    with pytest.raises(Unsupported, match="depend on the values of the host input"):
        lane.write({"dims": np.array([4, 3]), "x": np.zeros((2, 3), np.float32)})
    lane.close()


# ------------------------------------------------------------------------------------------- CUDA in the key (24)

class FakeCudaVersions:
    cudaError_t = SimpleNamespace(cudaSuccess=OK)

    def __init__(self, bindings: int, driver: int):
        self.bindings, self.driver = bindings, driver

    def cudaGetDeviceCount(self):
        return OK, 1

    def cudaGetDeviceProperties(self, index):
        return OK, SimpleNamespace(name=b"NVIDIA H100 80GB HBM3\0\0", major=9, minor=0)

    def cudaRuntimeGetVersion(self):
        return OK, self.bindings

    def cudaDriverGetVersion(self):
        return OK, self.driver


def environment_with(monkeypatch, bindings: int, driver: int) -> dict:
    monkeypatch.setattr(cuda, "rt", lambda: FakeCudaVersions(bindings, driver))
    monkeypatch.setattr(trt_env, "import_trt", lambda: SimpleNamespace(__version__="11.1.0"))
    trt_env.gpu.cache_clear()
    try:
        return {"key": trt_env.environment(), "bindings": trt_env.cuda_bindings()}
    finally:
        trt_env.gpu.cache_clear()


def test_the_cache_key_holds_the_drivers_cuda_not_the_bindings(monkeypatch):
    old = environment_with(monkeypatch, bindings=12080, driver=13000)
    new = environment_with(monkeypatch, bindings=13050, driver=13000)  # cuda-bindings upgraded
    assert old["key"] == new["key"] == {"tensorrt": "11.1.0", "gpu": "NVIDIA H100 80GB HBM3",
                                        "compute_capability": "9.0", "cuda": "13.0"}
    assert build.timing_identity(old["key"]) == build.timing_identity(new["key"])  # the timing cache is kept
    assert (old["bindings"], new["bindings"]) == ("12.8", "13.5")  # recorded, not keyed
    newer_driver = environment_with(monkeypatch, bindings=13050, driver=13020)
    assert newer_driver["key"]["cuda"] == "13.2" and newer_driver["key"] != new["key"]


# ------------------------------------------------------------------------------------------- profile capture (20)

class ProfiledLane:
    """A lane whose context reports one layer per inference, and whose enqueue fails inside a CUDA graph capture."""

    def __init__(self):
        self.enqueues, self.profiler = 0, None
        self.ctx = SimpleNamespace(profiler=None, enqueue_emits_profile=True, pending=0)
        self.ctx.report_to_profiler = self._flush

    def _flush(self):
        for _ in range(self.ctx.pending):
            self.ctx.profiler.report_layer_time("conv", 0.5)
        self.ctx.pending = 0
        return True

    def enqueue(self, stream):
        self.enqueues += 1
        if self.enqueues == 2:  # the one under capture
            raise RuntimeError("IExecutionContext.execute_async_v3 returned False")
        self.ctx.pending += 1
        if self.ctx.enqueue_emits_profile:
            self._flush()


def test_profile_capture_failure_keeps_the_first_error_and_frees_the_graph(monkeypatch):
    from stages.gpu import harness
    from stages.tensorrt import profile
    from tests.test_gpu_helpers import ERR, FakeRuntime, Handle, error

    partial = Handle("partial graph")
    fake = FakeRuntime(cudaStreamEndCapture=(error(), partial))
    for module in (cuda, harness, profile):
        monkeypatch.setattr(module, "rt", lambda: fake)

    class IProfiler:
        def __init__(self):
            pass
    built = SimpleNamespace(trt=SimpleNamespace(IProfiler=IProfiler))
    lane = ProfiledLane()
    times, note = profile.layer_times(built, lane, Handle("stream"), 3, cuda_graph=True)
    assert "execute_async_v3 returned False" in note and ERR not in note
    assert fake.called("cudaGraphDestroy") == [(partial,)] and not fake.called("cudaGraphLaunch")
    assert times == {"conv": 0.5} and lane.ctx.enqueue_emits_profile is True  # plain enqueues, each reporting


# ------------------------------------------------------------------------------------------- overlapping layers (21)

@pytest.mark.parametrize("aux_streams, stream_ids, overlap", [(0, [0, 0], False), (2, [0, 0], True),
                                                               (0, [0, 1], True)])
def test_profile_stage_says_when_layer_times_overlap(monkeypatch, tmp_path, aux_streams, stream_ids, overlap):
    import contextlib
    import json

    from stages.gpu import lock
    from stages.tensorrt import inspector, profile
    from tests.test_gpu_helpers import FakeRuntime

    lane = SimpleNamespace(ctx="ctx", write=lambda feeds: None, close=lambda: None)
    built = SimpleNamespace(engine=SimpleNamespace(num_aux_streams=aux_streams), input_shapes=lambda specs, sizes: {},
                            context=lambda shapes: lane)
    info = {"Layers": [{"Name": n, "LayerType": "Conv", "StreamId": s} for n, s in zip(("a", "b"), stream_ids)]}
    monkeypatch.setattr(profile.runtime, "Engine", lambda path: built)
    monkeypatch.setattr(profile.runtime, "new_stream", lambda: "stream")
    monkeypatch.setattr(profile, "rt", lambda: FakeRuntime())
    monkeypatch.setattr(profile, "layer_times", lambda *args: ({"a": 0.75, "b": 0.25}, None))
    monkeypatch.setattr(inspector, "engine_information", lambda built, ctx: json.dumps(info))
    monkeypatch.setattr(lock, "exclusive", lambda gpu: contextlib.nullcontext())
    monkeypatch.setattr(profile.model_inputs, "model_specs", lambda reference, feeds: [])
    rows, info = profile.layers("e", "export.onnx", {"batch_size": 1}, 0, 2, True, tmp_path)
    assert info["layers_overlap"] is overlap
    assert (info["layers_note"] == inspector.OVERLAP_NOTE) is overlap
    assert [r["share"] for r in rows] == [0.75, 0.25]

"""A deserialized TensorRT engine, and its execution contexts as harness lanes (the `Workload` protocol).

One `Context` per inference stream: its own execution context, device buffers and auxiliary streams, so
lanes never share state. Buffer sizes come from `DataType.itemsize`, never `trt.nptype`, which raises for
bf16, fp8, int4 and fp4. Device memory comes from cuda-python (stages.gpu.cuda), the same runtime the harness
uses, so TensorRT, the harness and the copies all work on the primary context of CUDA device 0.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from stages import inputs as model_inputs
from stages import tensorrt as trt_env
from stages.api import StageInputError, Unsupported
from stages.gpu.cuda import call, rt
from stages.gpu.harness import Buffer


def numpy_dtype(dtype) -> np.dtype | None:
    """numpy's equivalent of a TensorRT DataType, or None (int4, fp4, e8m0 have none)."""
    import ml_dtypes  # a dependency of onnx

    table = {"FLOAT": np.float32, "HALF": np.float16, "BF16": ml_dtypes.bfloat16, "FP8": ml_dtypes.float8_e4m3fn,
             "INT8": np.int8, "UINT8": np.uint8, "INT32": np.int32, "INT64": np.int64, "BOOL": np.bool_}
    found = table.get(dtype.name)
    return np.dtype(found) if found is not None else None


def nbytes(shape: tuple[int, ...], dtype) -> int:
    if dtype.itemsize is None:  # e8m0 and other block-scale types: no per-element size
        raise Unsupported(f"a tensor of type {dtype.name} has no per-element size; this backend cannot bind it")
    return math.ceil(math.prod(shape) * dtype.itemsize)  # itemsize is 0.5 for the 4-bit types


@dataclass(frozen=True)
class Tensor:
    name: str
    is_input: bool
    shape: tuple[int, ...]  # as built: -1 marks a dynamic axis
    dtype: Any              # trt.DataType
    on_host: bool = False   # TensorRT wants it in host memory (TensorLocation.HOST: e.g. a shape-tensor input)


class Engine:
    """An engine file deserialized, with its I/O tensors and the facts the runs table records."""

    def __init__(self, path: str | Path):
        trt = trt_env.import_trt()
        self.trt = trt
        self.logger = trt.Logger(trt.Logger.WARNING)
        # TensorRT's standard plugins must be registered before an engine that uses them is deserialized (the
        # ONNX parser turns several ops into plugins); Polygraphy and trtexec do the same. By name, because the
        # lean runtime module does not bind it (pyPlugin.cpp binds it only with EXPORT_ALL_BINDINGS; lean has no
        # libnvinfer_plugin), and an engine for the lean runtime uses no standard plugins.
        init_plugins = getattr(trt, "init_libnvinfer_plugins", None)
        if init_plugins is not None:
            init_plugins(self.logger, "")
        self.trt_runtime = trt.Runtime(self.logger)
        engine = self.trt_runtime.deserialize_cuda_engine(Path(path).read_bytes())
        if engine is None:
            raise RuntimeError(f"TensorRT could not deserialize {path}: built by another TensorRT version or for "
                               f"another GPU? (TensorRT's error is in the log above)")
        self.engine = engine
        self.tensors = []
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            self.tensors.append(Tensor(name, engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT,
                                       tuple(engine.get_tensor_shape(name)), engine.get_tensor_dtype(name),
                                       engine.get_tensor_location(name) == trt.TensorLocation.HOST))

    @property
    def inputs(self) -> list[Tensor]:
        return [t for t in self.tensors if t.is_input]

    def info(self) -> dict:
        engine = self.engine
        if hasattr(engine, "device_memory_size_v2"):  # TensorRT >= 10.1
            memory = engine.device_memory_size_v2
        else:  # 10.0 has only the old name, which 11 removed: by name, so the conformance scan does not flag it
            memory = getattr(engine, "device_memory_size")  # noqa: B009
        return {"aux_streams": engine.num_aux_streams, "device_memory_bytes": memory,
                "engine_layers": engine.num_layers}

    def input_shapes(self, specs: list[model_inputs.InputSpec], sizes: dict[str, int]) -> dict[str, tuple[int, ...]]:
        """Each input's concrete shape for the run's sizes, checked against the engine's optimization profile."""
        by_name = {s.name: s for s in specs}
        shapes = {}
        for t in self.inputs:
            if t.name not in by_name:
                raise RuntimeError(f"the engine's input '{t.name}' is not an input of the model ({', '.join(by_name)})")
            shape = model_inputs.concrete_shape(by_name[t.name], sizes)
            if -1 in t.shape:
                lo, _, hi = (tuple(s) for s in self.engine.get_tensor_profile_shape(t.name, 0))
                if not all(a <= d <= b for a, d, b in zip(lo, shape, hi)):
                    raise StageInputError(f"input '{t.name}' of shape {shape} is outside the engine's optimization "
                                          f"profile {lo}..{hi}; build it for these sizes (shapes.<axis>=[min,opt,max])")
            shapes[t.name] = shape
        return shapes

    def context(self, shapes: dict[str, tuple[int, ...]]) -> "Context":
        return Context(self, shapes)


class Context:
    """One execution context with its own device buffers and auxiliary streams: one harness lane.

    A tensor that TensorRT places on the host (get_tensor_location: typically a shape-tensor input, whose values
    TensorRT reads on the host to compute shapes) gets a numpy array instead of device memory; its address is
    what TensorRT is given, and write/read copy into and out of it."""

    def __init__(self, built: Engine, shapes: dict[str, tuple[int, ...]]):
        self.built = built
        self.io: dict[str, tuple[Buffer, tuple[int, ...], Tensor]] = {}
        self.host: dict[str, np.ndarray] = {}  # the arrays behind the host tensors' addresses: kept alive here
        self.aux_streams: list = []
        self.profiler = None  # an IProfiler attached to ctx: TensorRT keeps a raw pointer, we keep the object
        ctx = built.engine.create_execution_context()
        if ctx is None:
            raise RuntimeError("TensorRT could not create an execution context (out of device memory?)")
        self.ctx = ctx
        try:
            self._bind(shapes)
        except BaseException:
            self.close()
            raise

    def _bind(self, shapes: dict[str, tuple[int, ...]]) -> None:
        ctx = self.ctx
        for t in self.built.inputs:
            if not ctx.set_input_shape(t.name, shapes[t.name]):
                raise StageInputError(f"TensorRT refused shape {shapes[t.name]} for input '{t.name}'")
            if t.on_host:  # shape inference reads a host input's values: its address must be set before
                self._bind_host(t, tuple(shapes[t.name]))
        missing = ctx.infer_shapes()
        if missing:
            raise RuntimeError(f"TensorRT cannot infer the shapes of {list(missing)}")
        for t in self.built.tensors:
            if t.name in self.io:
                continue
            shape = tuple(ctx.get_tensor_shape(t.name))
            if any(d < 0 for d in shape):
                raise Unsupported(f"output '{t.name}' has a data-dependent shape {shape}; that needs an output "
                                  f"allocator, which this backend does not implement")
            if t.on_host:
                self._bind_host(t, shape)
                continue
            size = nbytes(shape, t.dtype)
            buf = Buffer(int(call("cudaMalloc", max(size, 1))), size)
            self.io[t.name] = (buf, shape, t)
            if not ctx.set_tensor_address(t.name, buf.ptr):
                raise RuntimeError(f"TensorRT refused the device address of '{t.name}'")
        # Streams of our own for the engine's auxiliary streams: non-blocking, so they never wait on stream 0.
        for _ in range(self.built.engine.num_aux_streams):
            self.aux_streams.append(call("cudaStreamCreateWithFlags", rt().cudaStreamNonBlocking))
        if self.aux_streams:
            ctx.set_aux_streams([int(s) for s in self.aux_streams])

    def _bind_host(self, t: Tensor, shape: tuple[int, ...]) -> None:
        np_dtype = numpy_dtype(t.dtype)
        if np_dtype is None:
            raise Unsupported(f"host tensor '{t.name}' is {t.dtype.name}, which numpy cannot hold")
        array = self.host[t.name] = np.zeros(shape, dtype=np_dtype)
        self.io[t.name] = (Buffer(array.ctypes.data, array.nbytes), shape, t)
        if not self.ctx.set_tensor_address(t.name, array.ctypes.data):
            raise RuntimeError(f"TensorRT refused the host address of '{t.name}'")

    def _check_shapes(self) -> None:
        """After new values in host inputs: the buffers were sized for the old ones, so the shapes must hold."""
        changed = self.ctx.infer_shapes() or [name for name, (_, shape, _) in self.io.items()
                                               if tuple(self.ctx.get_tensor_shape(name)) != shape]
        if changed:
            raise Unsupported(f"the shapes of {list(changed)} depend on the values of the host input(s) "
                              f"{[n for n, (_, _, t) in self.io.items() if t.on_host and t.is_input]}; "
                              f"this backend sizes its buffers once")

    # --- the harness's Workload protocol
    def enqueue(self, stream: int) -> None:
        if not self.ctx.execute_async_v3(stream):
            raise RuntimeError("IExecutionContext.execute_async_v3 returned False (TensorRT's error is logged above)")

    def buffers(self) -> tuple[list[Buffer], list[Buffer]]:
        """The device buffers (host tensors are not copied: TensorRT reads and writes them in place)."""
        ins = [buf for buf, _, t in self.io.values() if t.is_input and not t.on_host]
        outs = [buf for buf, _, t in self.io.values() if not t.is_input and not t.on_host]
        return ins, outs

    def io_bytes(self) -> int:
        """The device memory of this context's input and output buffers (host tensors excluded)."""
        return sum(buf.nbytes for buf, _, t in self.io.values() if not t.on_host)

    # --- synchronous helpers for validation and profiling
    def write(self, feeds: dict[str, np.ndarray]) -> None:
        """Upload inputs and wait until they are on the device: the inference streams are non-blocking, so a
        copy still in flight on the legacy stream would race them (pageable H2D copies return early)."""
        kind = rt().cudaMemcpyKind.cudaMemcpyHostToDevice
        for name, array in feeds.items():
            buf, shape, t = self.io[name]
            host = np.ascontiguousarray(array, dtype=numpy_dtype(t.dtype)).reshape(shape)
            if t.on_host:
                np.copyto(self.host[name], host)  # in place: TensorRT holds this array's address
            else:
                call("cudaMemcpy", buf.ptr, host.ctypes.data, buf.nbytes, kind)
        if any(self.io[name][2].on_host for name in feeds):
            self._check_shapes()
        call("cudaDeviceSynchronize")

    def read(self) -> dict[str, np.ndarray]:
        kind = rt().cudaMemcpyKind.cudaMemcpyDeviceToHost
        out = {}
        for name, (buf, shape, t) in self.io.items():
            if t.is_input:
                continue
            np_dtype = numpy_dtype(t.dtype)
            if np_dtype is None:
                raise Unsupported(f"output '{name}' is {t.dtype.name}, which numpy cannot hold")
            if t.on_host:
                out[name] = self.host[name].copy()  # the next inference writes into the same array
                continue
            host = np.empty(shape, dtype=np_dtype)
            call("cudaMemcpy", host.ctypes.data, buf.ptr, buf.nbytes, kind)
            out[name] = host
        return out

    def infer(self, feeds: dict[str, np.ndarray], stream) -> dict[str, np.ndarray]:
        self.write(feeds)
        self.enqueue(int(stream))
        call("cudaStreamSynchronize", stream)
        return self.read()

    def close(self) -> None:
        for buf, _, t in self.io.values():
            if not t.on_host:
                rt().cudaFree(buf.ptr)
        for stream in self.aux_streams:
            rt().cudaStreamDestroy(stream)
        self.io, self.host, self.aux_streams = {}, {}, []
        self.ctx = None


def new_stream():
    return call("cudaStreamCreateWithFlags", rt().cudaStreamNonBlocking)

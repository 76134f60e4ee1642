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


class Engine:
    """An engine file deserialized, with its I/O tensors and the facts the runs table records."""

    def __init__(self, path: str | Path):
        trt = trt_env.import_trt()
        self.trt = trt
        self.logger = trt.Logger(trt.Logger.WARNING)
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
                                       tuple(engine.get_tensor_shape(name)), engine.get_tensor_dtype(name)))

    @property
    def inputs(self) -> list[Tensor]:
        return [t for t in self.tensors if t.is_input]

    def info(self) -> dict:
        engine = self.engine
        return {"aux_streams": engine.num_aux_streams, "device_memory_bytes": engine.device_memory_size_v2,
                "engine_layers": engine.num_layers}

    def input_shapes(self, batch_size: int) -> dict[str, tuple[int, ...]]:
        """Concrete input shapes: the batch axis takes batch_size, other dynamic axes the profile's opt value."""
        engine = self.engine
        shapes = {}
        for t in self.inputs:
            if -1 not in t.shape:
                shapes[t.name] = t.shape
                continue
            lo, opt, hi = (tuple(s) for s in engine.get_tensor_profile_shape(t.name, 0))
            shape = list(opt)
            if t.shape[0] == -1:
                if not lo[0] <= batch_size <= hi[0]:
                    raise StageInputError(f"batch_size = {batch_size} is outside the engine's optimization profile "
                                          f"for input '{t.name}' ({lo[0]}..{hi[0]}); see build.min_batch/max_batch")
                shape[0] = batch_size
            shapes[t.name] = tuple(shape)
        return shapes

    def random_inputs(self, shapes: dict[str, tuple[int, ...]], seed: int) -> dict[str, np.ndarray]:
        """Seeded data for every input, drawn as every backend draws it (stages.inputs)."""
        specs = []
        for t in self.inputs:
            np_dtype = numpy_dtype(t.dtype)
            if np_dtype is None:
                raise Unsupported(f"input '{t.name}' is {t.dtype.name}, which has no numpy type to fill it with")
            shape = shapes[t.name]
            specs.append(model_inputs.InputSpec(t.name, (None, *shape[1:]) if shape else (), np_dtype))
        batch = next((s[0] for s in shapes.values() if s), 1)
        return model_inputs.random_inputs(specs, batch, seed)

    def context(self, shapes: dict[str, tuple[int, ...]]) -> "Context":
        return Context(self, shapes)


class Context:
    """One execution context with its own device buffers and auxiliary streams: one harness lane."""

    def __init__(self, built: Engine, shapes: dict[str, tuple[int, ...]]):
        self.built = built
        self.io: dict[str, tuple[Buffer, tuple[int, ...], Tensor]] = {}
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
        missing = ctx.infer_shapes()
        if missing:
            raise RuntimeError(f"TensorRT cannot infer the shapes of {list(missing)}")
        for t in self.built.tensors:
            shape = tuple(ctx.get_tensor_shape(t.name))
            if any(d < 0 for d in shape):
                raise Unsupported(f"output '{t.name}' has a data-dependent shape {shape}; that needs an output "
                                  f"allocator, which this backend does not implement")
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

    # --- the harness's Workload protocol
    def enqueue(self, stream: int) -> None:
        if not self.ctx.execute_async_v3(stream):
            raise RuntimeError("IExecutionContext.execute_async_v3 returned False (TensorRT's error is logged above)")

    def buffers(self) -> tuple[list[Buffer], list[Buffer]]:
        ins = [buf for buf, _, t in self.io.values() if t.is_input]
        outs = [buf for buf, _, t in self.io.values() if not t.is_input]
        return ins, outs

    # --- synchronous helpers for validation and profiling
    def write(self, feeds: dict[str, np.ndarray]) -> None:
        """Upload inputs and wait until they are on the device: the inference streams are non-blocking, so a
        copy still in flight on the legacy stream would race them (pageable H2D copies return early)."""
        kind = rt().cudaMemcpyKind.cudaMemcpyHostToDevice
        for name, array in feeds.items():
            buf, shape, t = self.io[name]
            host = np.ascontiguousarray(array, dtype=numpy_dtype(t.dtype)).reshape(shape)
            call("cudaMemcpy", buf.ptr, host.ctypes.data, buf.nbytes, kind)
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
        for buf, _, _ in self.io.values():
            rt().cudaFree(buf.ptr)
        for stream in self.aux_streams:
            rt().cudaStreamDestroy(stream)
        self.io, self.aux_streams = {}, []
        self.ctx = None


def new_stream():
    return call("cudaStreamCreateWithFlags", rt().cudaStreamNonBlocking)

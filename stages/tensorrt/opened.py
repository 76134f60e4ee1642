"""The TensorRT engine, opened for the shared stages (stages/runtime.py): timed by the cuda-python harness, one
execution context per inference stream with its own buffers holding seeded inputs (the timed loop holds the per-GPU
measurement lock and NVML samples clocks, power, temperature and the energy of the timed span); compared with the
fp32 export run by ONNX Runtime on the CPU, batch by batch, the engine getting the reference's input values cast to
its own input types; profiled by TensorRT's IProfiler (stages/tensorrt/profile.py).

Memory comes from what the engine says (TensorRT allocates outside any allocator we could ask): its weights, about
the engine file's size, plus per context its device memory and I/O buffers (stages/gpu/costs.py: `gpu_memory/*`,
`artifact/engine`, `artifact/onnx_export`).
"""
from __future__ import annotations

from pathlib import Path

from stages import inputs as model_inputs
from stages.gpu import costs
from stages.gpu.cuda import rt
from stages.onnxruntime import session
from stages.runtime import Runtime
from stages.tensorrt import profile, runtime


class EngineRuntime(Runtime):
    device = "cuda"
    on_gpu = True  # as an accuracy runner: inside the GPU session

    def __init__(self, engine: Path, reference: Path):
        self.engine_path, self.reference_path = Path(engine), Path(reference)
        self.built = runtime.Engine(engine)
        self.contexts: list = []  # the timed lanes, closed with the runtime
        self.lane = self.stream = None  # the accuracy runner's context, made for the first batch's shapes

    def specs(self, feeds: dict) -> list:
        return model_inputs.model_specs(self.reference_path, feeds)

    def infer(self, feeds: dict) -> dict:
        if self.lane is None:
            self.lane = self.built.context({name: tuple(value.shape) for name, value in feeds.items()})
            self.stream = runtime.new_stream()
        return self.lane.infer(feeds, self.stream)

    def reference(self) -> session.Runner:
        return session.reference_runner(self.reference_path)

    def lanes(self, specs: list, sizes: dict, seed: int, streams: int) -> list:
        shapes = self.built.input_shapes(specs, sizes)
        feeds = model_inputs.random_inputs(specs, sizes, seed)
        for _ in range(streams):
            self.contexts.append(self.built.context(shapes))
            self.contexts[-1].write(feeds)
        return list(self.contexts)

    def measured(self, lanes: list) -> dict:
        info = self.built.info()
        io_bytes = sum(lane.io_bytes() for lane in lanes)
        rows, extra = memory_rows(info.get("device_memory_bytes"), len(lanes), io_bytes, self.engine_path,
                                  self.reference_path)
        return {"info": {**info, **extra}, "rows": rows}

    def profile(self, feeds: dict, iterations: int, settings: dict, out_dir: Path):
        return profile.layers(self.engine_path, self.reference_path, feeds, settings["seed"], iterations,
                              settings["cuda_graph"], out_dir)

    def close(self) -> None:
        for lane in self.contexts:
            lane.close()
        self.contexts = []
        if self.lane is not None:
            self.lane.close()
        if self.stream is not None:
            rt().cudaStreamDestroy(self.stream)
        self.lane = self.stream = None


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

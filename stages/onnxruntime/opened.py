"""The built ONNX Runtime model, opened for the shared stages (stages/runtime.py) on the execution provider it was
built for (session.json): on the CPU provider timed on the host; on a GPU provider (cuda, tensorrt) timed by the GPU
harness, one session per inference stream on that stream (stages/onnxruntime/workload.py)."""
from __future__ import annotations

from pathlib import Path

from stages import inputs as model_inputs
from stages import runtime
from stages.api import Unsupported
from stages.onnxruntime import profile, providers, session
from stages.onnxruntime.workload import OrtWorkload


def open_build(model: Path, reference: Path) -> runtime.Runtime:
    provider = session.built_settings(model)["provider"]
    return (GpuOnnxRuntime if provider in providers.GPU else OnnxRuntime)(model, reference)


class OnnxRuntime(runtime.Runtime):
    """The built model in an ONNX Runtime session (stages/runtime.py): timed on the host, compared with the fp32
    export, profiled by ORT's own profiler (stages/onnxruntime/profile.py)."""

    def __init__(self, model: Path, reference: Path):
        self.model, self.reference_path = Path(model), Path(reference)
        self.settings = session.built_settings(self.model)
        self.runner = session.Runner(session.open_built(self.model), self.model, on_gpu=self.on_gpu)

    def specs(self, feeds: dict) -> list:
        return model_inputs.model_specs(self.reference_path, feeds)

    def infer(self, feeds: dict) -> dict:
        return self.runner.infer(feeds)

    def reference(self) -> session.Runner:
        return session.reference_runner(self.reference_path)

    def call(self, feeds: dict):
        sess, arrays = self.runner.sess, self.runner.cast(feeds)
        return lambda: sess.run(None, arrays)

    def profile(self, feeds: dict, iterations: int, settings: dict, out_dir: Path):
        return profile.layers(self.model, self.reference_path, feeds, settings["seed"], iterations, out_dir)

    def close(self) -> None:
        self.runner.close()


class GpuOnnxRuntime(OnnxRuntime):
    """On a GPU provider: each inference stream a session of its own, on the harness's stream, with seeded inputs
    bound on the device. No CUDA graph: an ORT run may allocate or wait on the host, which a capture forbids, and a
    failed capture can leave the CUDA context unusable for the points after it (ORT's own capture,
    `enable_cuda_graph`, is not wired). Validation runs the session on host arrays, which ORT copies over."""
    device = "cuda"
    on_gpu = True

    def __init__(self, model: Path, reference: Path):
        super().__init__(model, reference)
        self.provider = self.settings["provider"]
        self.workloads: list[OrtWorkload] = []

    call = runtime.Runtime.call  # timed on the GPU only

    def lanes(self, specs: list, sizes: dict, seed: int, streams: int) -> list:
        feeds = self.runner.cast(model_inputs.random_inputs(specs, sizes, seed))
        self.workloads = [OrtWorkload(feeds, lambda stream: session.open_built(self.model, stream))
                          for _ in range(streams)]
        return list(self.workloads)

    def cuda_graph(self, requested: bool, lanes: list) -> tuple[bool, str | None]:
        if not requested:
            return False, "benchmark.cuda_graph=false"
        return False, (f"onnxruntime's {providers.NAMES[self.provider]} runs without a harness-captured CUDA graph "
                       f"(an ORT run may allocate or wait on the host, which a capture forbids)")

    def measured(self, lanes: list) -> dict:
        from stages.gpu import session as gpu_session

        got = ",".join(lanes[0].sess.get_providers()) if lanes and lanes[0].sess is not None else None
        return {"gpu": gpu_session.identity()["gpu"],
                "info": {"provider": providers.NAMES[self.provider], "session_providers": got,
                         "tf32": self.settings["tf32"], "io_bytes": sum(lane.io_bytes() for lane in lanes)}}

    def profile(self, feeds: dict, iterations: int, settings: dict, out_dir: Path):
        raise Unsupported(f"backend.provider={self.provider}: no per-layer profile: ORT's profiler times nodes on "
                          f"the host, and whether that covers a GPU provider's asynchronous kernels is unchecked "
                          f"(profile.enabled=false, or the tensorrt backend's IProfiler)")

    def close(self) -> None:
        for lane in self.workloads:
            lane.close()
        self.workloads = []
        super().close()

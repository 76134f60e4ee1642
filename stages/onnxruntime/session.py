"""How a built ONNX Runtime model is opened: the session settings recorded at build time, applied on load.

The build stage saves ORT's optimized graph together with `session.json`; the benchmark and validate
stages open that graph with exactly those settings, on the execution provider it was built for
(stages/onnxruntime/providers.py), so what is measured is what was built.
"""
from __future__ import annotations

import json
from pathlib import Path

from stages import host
from stages.api import onnxruntime_version
from stages.onnxruntime import providers

SETTINGS_FILE = "session.json"
# backend.optimization_level (TensorRT's 0-5 scale) -> ORT graph optimization level. ORT has four levels;
# 3 (both tools' default) and above take ORT's default, ENABLE_ALL.
LEVELS = {0: "ORT_DISABLE_ALL", 1: "ORT_ENABLE_BASIC", 2: "ORT_ENABLE_EXTENDED",
          3: "ORT_ENABLE_ALL", 4: "ORT_ENABLE_ALL", 5: "ORT_ENABLE_ALL"}


def environment(provider: str) -> dict:
    """What a built graph depends on beyond its inputs: ORT_ENABLE_ALL saves layout transforms specific to the CPU's
    instruction set, or, on a GPU provider, nodes placed for that provider (keyed by the GPU and its CUDA)."""
    env = {"onnxruntime": onnxruntime_version(), "provider": providers.NAMES[provider]}
    if provider not in providers.GPU:
        return {**env, **host.cpu_identity()}
    providers.check_here(provider)  # a GPU provider this machine lacks: Unsupported before any cache look-up
    from stages import availability
    from stages.gpu import session as gpu_session

    gpu, capability = gpu_session.identity(), availability.compute_capability()
    return {**env, "gpu": gpu["gpu"], "cuda": gpu["cuda"],
            "compute_capability": ".".join(map(str, capability)) if capability else None}


def built_settings(model: Path) -> dict:
    """The settings a built model was built with (session.json beside it). A build from before backend.provider
    existed records none of these: it ran on the CPU provider, without TF32 (its precision then matters to no one)."""
    recorded = json.loads((Path(model).parent / SETTINGS_FILE).read_text())
    return {"provider": "cpu", "tf32": False, "precision": None, **recorded}


def options(settings: dict, *, level: str):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
    so.intra_op_num_threads = settings["intra_op_threads"]
    so.inter_op_num_threads = settings["inter_op_threads"]
    so.execution_mode = (ort.ExecutionMode.ORT_PARALLEL if settings["execution_mode"] == "parallel"
                         else ort.ExecutionMode.ORT_SEQUENTIAL)
    for key, value in settings.get("config_entries", {}).items():
        so.add_session_config_entry(key, value)
    so.log_severity_level = 3  # errors only: ORT's warnings would drown the progress lines
    return so


def open_built(model: Path, stream: int | None = None):
    """Open a built model with its recorded settings on its provider (`stream`: a GPU provider's compute stream),
    Unsupported if the session did not get that provider. The graph is already optimized: optimizing it again could
    undo what the build decided (e.g. re-fuse fp8 Q/DQ pairs the CPU provider cannot run); the TensorRT provider's
    build keeps the converted graph (ORT cannot save one it compiled for TensorRT), so it is optimized on load."""
    import onnxruntime as ort

    settings = built_settings(model)
    provider = settings["provider"]
    providers.check_here(provider)
    level = settings["graph_optimization_level"] if provider == "tensorrt" else "ORT_DISABLE_ALL"
    sess = ort.InferenceSession(str(model), options(settings, level=level),
                                providers=providers.session_providers(provider, settings["precision"], settings["tf32"],
                                                                     stream))
    providers.check_got(sess, provider)
    return sess


def open_reference(path: Path):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC  # exact rewrites only
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=[providers.NAMES["cpu"]])


class Runner:
    """An ONNX Runtime session as an accuracy runner (stages/accuracy.py): feeds cast to the model's input types
    (numpy on the host: a GPU provider's session copies them over). `on_gpu`: it runs inside the GPU session."""

    def __init__(self, sess, path: Path, on_gpu: bool = False):
        from stages import inputs as model_inputs

        self.sess, self.on_gpu = sess, on_gpu
        self.dtypes = {spec.name: spec.dtype for spec in model_inputs.specs_from_onnx(path)}
        self.names = [o.name for o in sess.get_outputs()]

    def cast(self, feeds: dict) -> dict:
        """The feeds in the model's own input types (a converted model may take fp16)."""
        return {name: value.astype(self.dtypes.get(name, value.dtype), copy=False) for name, value in feeds.items()}

    def infer(self, feeds: dict) -> dict:
        return dict(zip(self.names, self.sess.run(self.names, self.cast(feeds))))

    def close(self) -> None:
        self.sess = None


def reference_runner(path: Path) -> Runner:
    """The fp32 export on the CPU: the reference every ONNX backend's validation compares with."""
    return Runner(open_reference(path), path)


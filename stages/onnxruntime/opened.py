"""The built ONNX Runtime model, opened for the shared stages (stages/runtime.py)."""
from __future__ import annotations

from pathlib import Path

from stages import inputs as model_inputs
from stages import runtime
from stages.onnxruntime import profile, session


class OnnxRuntime(runtime.Runtime):
    """The built model in an ONNX Runtime session (stages/runtime.py): timed on the host, compared with the fp32
    export, profiled by ORT's own profiler (stages/onnxruntime/profile.py)."""

    def __init__(self, model: Path, reference: Path):
        self.model, self.reference_path = Path(model), Path(reference)
        self.runner = session.Runner(session.open_built(self.model), self.model)

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

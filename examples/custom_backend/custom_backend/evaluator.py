"""The graph opened by ONNX's reference evaluator: the runtime the pipeline's shared stages measure
(stages/runtime.py)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from stages import inputs as model_inputs
from stages import runtime
from stages.onnxruntime import session


class ReferenceEvaluator(runtime.Runtime):
    """Timed on the host and compared with the fp32 export on ONNX Runtime, as every backend is."""

    def __init__(self, model: Path, reference: Path, optimized: bool):
        from onnx.reference import ReferenceEvaluator as Evaluator

        self.evaluator = Evaluator(str(model), optimized=optimized)
        self.dtypes = {spec.name: spec.dtype for spec in model_inputs.specs_from_onnx(Path(model))}
        self.reference_path = Path(reference)

    def specs(self, feeds: dict) -> list:
        return model_inputs.model_specs(self.reference_path, feeds)

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        cast = {name: value.astype(self.dtypes.get(name, value.dtype), copy=False) for name, value in feeds.items()}
        return dict(zip(self.evaluator.output_names, self.evaluator.run(None, cast)))

    def reference(self):
        return session.reference_runner(self.reference_path)

    def call(self, feeds: dict):
        return lambda: self.infer(feeds)

    def close(self) -> None:
        self.evaluator = None

"""The graph opened by ONNX's reference evaluator, as the pipeline's accuracy runner protocol expects it."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from stages import inputs as model_inputs


class Runner:
    on_gpu = False

    def __init__(self, path: Path, optimized: bool):
        from onnx.reference import ReferenceEvaluator

        self.evaluator = ReferenceEvaluator(str(path), optimized=optimized)
        self.dtypes = {spec.name: spec.dtype for spec in model_inputs.specs_from_onnx(path)}

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        cast = {name: value.astype(self.dtypes.get(name, value.dtype), copy=False) for name, value in feeds.items()}
        return dict(zip(self.evaluator.output_names, self.evaluator.run(None, cast)))

    def close(self) -> None:
        self.evaluator = None

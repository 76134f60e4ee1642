"""validate_torch stage: the compiled model against the fp32 eager model (TF32 off) on the same seeded inputs."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from stages import accuracy
from stages import inputs as model_inputs
from stages.api import Param, StageResult
from stages.torch_backend import compiled, precision

VERSION = "2"  # 2: one accuracy path (stages/accuracy.py), samples recorded
OUTPUTS = ()
CACHED = False
PARAMS = {"batch_size": Param(int, min=1), "seed": Param(int), "batches": Param(int, min=1)}


class Runner:
    """A torch callable as an accuracy runner (stages/accuracy.py): the feeds moved to its device, dtype and memory
    format, its math mode set, its output(s) back as numpy arrays by name."""

    def __init__(self, fn, device: str, precision_name: str, channels_last: bool = False):
        self.fn, self.device, self.precision, self.channels_last = fn, device, precision_name, channels_last
        self.on_gpu = device == "cuda"

    def infer(self, feeds: dict) -> dict:
        import torch

        precision.apply_math_mode(self.precision)
        dtype = precision.torch_dtype(self.precision)
        args = []
        for value in feeds.values():
            x = torch.from_numpy(value).to(self.device)
            x = x.to(dtype) if x.is_floating_point() else x
            args.append(x.contiguous(memory_format=torch.channels_last) if self.channels_last and x.dim() == 4 else x)
        with torch.inference_mode():
            return {"output": self.fn(*args).float().cpu().numpy()}

    def close(self) -> None:
        self.fn = None


def run(inputs: dict, params: dict, out_dir: Path) -> StageResult:
    c = compiled.lookup(inputs["compiled"])
    spec = model_inputs.InputSpec("input", (None, *c.input_shape), np.dtype(np.float32))
    batches = model_inputs.validation_batches([spec], params["batch_size"], params["seed"], params["batches"])
    candidate = Runner(c.fn, c.device, c.dtype, c.channels_last)
    reference = Runner(c.reference, c.device, "fp32")  # TF32 off: the reference is true fp32
    rows, info = accuracy.evaluate(candidate, reference, batches, f"fp32 eager torch on {c.device}")
    return StageResult(info=info, tables={"accuracy": rows})

"""validate_torch stage: the compiled model against the fp32 eager model (TF32 off) on the same seeded inputs."""
from __future__ import annotations

from pathlib import Path

from stages import accuracy, datasets, sources
from stages.api import Param, StageResult
from stages.torch_backend import compiled, precision, tensors

VERSION = "2"  # 2: one accuracy path (stages/accuracy.py), samples recorded
OUTPUTS = ()
CACHED = False
PARAMS = {"feeds": Param(dict), "seed": Param(int), "validation": Param(dict)}


class Runner:
    """A torch callable as an accuracy runner (stages/accuracy.py): the feeds moved to its device, dtype and memory
    format, its math mode set, its output(s) back as numpy arrays by name."""

    def __init__(self, fn, device: str, precision_name: str, output_names: list[str], channels_last: bool = False):
        self.fn, self.device, self.precision, self.channels_last = fn, device, precision_name, channels_last
        self.output_names = output_names
        self.on_gpu = device == "cuda"

    def infer(self, feeds: dict) -> dict:
        import torch

        precision.apply_math_mode(self.precision)
        args = tensors.place(feeds, self.device, precision.torch_dtype(self.precision), self.channels_last)
        with torch.inference_mode():
            outputs = sources.named(self.fn(*args), self.output_names)
        return {name: out.float().cpu().numpy() for name, out in outputs.items()}

    def close(self) -> None:
        self.fn = None


def run(inputs: dict, params: dict, out_dir: Path) -> StageResult:
    c = compiled.lookup(inputs["compiled"])
    batches = datasets.validation(c.specs, params["feeds"], params["validation"], params["seed"])
    candidate = Runner(c.fn, c.device, c.dtype, c.output_names, c.channels_last)
    reference = Runner(c.reference, c.device, "fp32", c.output_names)  # TF32 off: the reference is true fp32
    rows, info = accuracy.evaluate(candidate, reference, batches, f"fp32 eager torch on {c.device}",
                                   params["validation"].get("metric"))
    return StageResult(info=info, tables={"accuracy": rows})

"""validate_torch stage: the compiled model against the fp32 eager model (TF32 off) on the same seeded inputs."""
from __future__ import annotations

from pathlib import Path

from stages import accuracy
from stages import inputs as model_inputs
from stages.api import StageResult
from stages.torch_backend import compiled, precision, tensors

VERSION = "1"
OUTPUTS = ()
CACHED = False


def run(inputs: dict, params: dict, out_dir: Path) -> StageResult:
    import numpy as np
    import torch

    c = compiled.lookup(inputs["compiled"])
    dtype = precision.torch_dtype(c.dtype)
    want, got = [], []
    with torch.inference_mode():
        for batch in range(params["batches"]):
            seed = params["seed"] + model_inputs.SEED_VALIDATION + batch
            x = tensors.seeded(c.input_shape, params["batch_size"], seed, c.device, torch.float32)
            precision.apply_math_mode("fp32")
            want.append(c.reference(x).float().cpu().numpy())
            precision.apply_math_mode(c.dtype)
            cand = x.to(dtype)
            if c.channels_last and cand.dim() == 4:
                cand = cand.contiguous(memory_format=torch.channels_last)
            got.append(c.fn(cand).float().cpu().numpy())
    metrics = accuracy.compare(np.concatenate(want), np.concatenate(got))
    reference = f"fp32 eager torch on {c.device}"
    return StageResult(info={k: metrics[k] for k in ("rel_l2_err", "top1_agreement") if k in metrics},
                       tables={"accuracy": accuracy.rows("output", metrics, reference)})

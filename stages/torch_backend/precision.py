"""What a precision means for torch: the parameter/input dtype and the TF32 math mode (process-wide).

int8 and fp8 are quantization recipes (stages/torch_backend/quantize.py): their quantized layers run int8 / fp8
kernels, and everything else, the inputs included, is bf16 (what torchao's kernels take and give back).
"""
from __future__ import annotations

from stages.api import Unsupported

DTYPES = {"fp32": "float32", "tf32": "float32", "fp16": "float16", "bf16": "bfloat16",
          "int8": "bfloat16", "fp8": "bfloat16"}


def torch_dtype(precision: str):
    """The dtype of the model's parameters that stay high precision, and of its float inputs."""
    import torch

    if precision not in DTYPES:
        raise Unsupported(f"precision={precision}: the torch backend has no {precision} path (valid: "
                          f"{', '.join(DTYPES)})")
    return getattr(torch, DTYPES[precision])


def apply_math_mode(precision: str) -> None:
    """TF32 only for the tf32 arm: fp32 must be true fp32 (cuDNN allows TF32 convolutions by default)."""
    import torch

    tf32 = precision == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32

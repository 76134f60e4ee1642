"""What a precision means for torch: the parameter/input dtype and the TF32 math mode (process-wide).

int8 and fp8 are quantization recipes (stages/torch_backend/quantize.py): their quantized layers run int8 / fp8
kernels, and everything else, the inputs included, is bf16 (what torchao's kernels take and give back).
"""
from __future__ import annotations

import contextlib

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


@contextlib.contextmanager
def scoped(precision: str, inductor: dict | None = None):
    """apply_math_mode and the Inductor settings `inductor` for the block only: the process's float32 matmul
    precision, cuDNN's TF32 flag and Inductor's config are as they were after it (a build must not leave a later
    fp32 point, or an fp32 reference computed in the same process, running TF32 or under its compile settings)."""
    import torch

    legacy = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32  # what apply_math_mode sets
    try:
        matmul = torch.get_float32_matmul_precision()
    except RuntimeError:  # torch refuses to answer once its legacy and new TF32 APIs were mixed: the flags say it
        matmul = None
    try:
        with torch._inductor.config.patch(inductor or {}):
            apply_math_mode(precision)
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = legacy
        if matmul is not None:
            torch.set_float32_matmul_precision(matmul)

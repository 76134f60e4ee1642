"""What a precision means for torch: the parameter/input dtype and the TF32 math mode (process-wide)."""
from __future__ import annotations

from stages.api import Unsupported

DTYPES = {"fp32": "float32", "tf32": "float32", "fp16": "float16", "bf16": "bfloat16"}


def torch_dtype(precision: str):
    import torch

    if precision not in DTYPES:
        raise Unsupported(f"precision={precision}: the torch backend has no real {precision} path (quantized "
                          f"weights here would be fake-quant, timed at high precision); use backend=onnxruntime "
                          f"or backend=tensorrt")
    return getattr(torch, DTYPES[precision])


def apply_math_mode(precision: str) -> None:
    """TF32 only for the tf32 arm: fp32 must be true fp32 (cuDNN allows TF32 convolutions by default)."""
    import torch

    tf32 = precision == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32

"""Dense (no sparsity) peak throughput per GPU and dtype, in TFLOP/s (TOPS for int8), from NVIDIA's datasheets:
H100 SXM5 / PCIe and H200 SXM: "NVIDIA H100 Tensor Core GPU" and "NVIDIA H200" datasheets; A100: "NVIDIA A100
Tensor Core GPU" datasheet (SXM4); L4 and L40S: their product datasheets; RTX 4090: "NVIDIA Ada GPU
Architecture" whitepaper, appendix (FP16/BF16 tensor with FP32 accumulate). Datasheets quote sparse figures
for tensor cores; the dense figure is half of that. fp32 is the CUDA-core rate (no TF32).
"""
from __future__ import annotations

SOURCE = "NVIDIA datasheets (dense, boost clock); see stages/gpu/peaks.py"

# name fragment as NVML reports it -> dtype -> dense TFLOP/s. First match wins, so specific names first.
PEAKS: list[tuple[str, dict[str, float]]] = [
    ("H100 PCIe", {"fp32": 51.2, "tf32": 378.0, "fp16": 756.0, "bf16": 756.0, "fp8": 1513.0, "int8": 1513.0}),
    ("H100 NVL", {"fp32": 60.0, "tf32": 417.5, "fp16": 835.0, "bf16": 835.0, "fp8": 1670.5, "int8": 1670.5}),
    ("H100", {"fp32": 66.9, "tf32": 494.7, "fp16": 989.4, "bf16": 989.4, "fp8": 1978.9, "int8": 1978.9}),
    ("H200", {"fp32": 66.9, "tf32": 494.7, "fp16": 989.4, "bf16": 989.4, "fp8": 1978.9, "int8": 1978.9}),
    ("A100", {"fp32": 19.5, "tf32": 156.0, "fp16": 312.0, "bf16": 312.0, "int8": 624.0}),
    ("L40S", {"fp32": 91.6, "tf32": 183.0, "fp16": 362.05, "bf16": 362.05, "fp8": 733.0, "int8": 733.0}),
    ("L4", {"fp32": 30.3, "tf32": 60.0, "fp16": 121.0, "bf16": 121.0, "fp8": 242.5, "int8": 242.5}),
    ("RTX 4090", {"fp32": 82.6, "tf32": 82.6, "fp16": 165.2, "bf16": 165.2, "fp8": 330.3, "int8": 660.6}),
]


def peak_tflops(gpu_name: str | None, dtype: str) -> float | None:
    if not gpu_name:
        return None
    for fragment, table in PEAKS:
        if fragment in gpu_name:
            return table.get(dtype)
    return None

"""Which physical GPU a CUDA device index is. NVML numbers GPUs ignoring CUDA_VISIBLE_DEVICES, so under a
scheduler that hands a job "its" GPU that way, CUDA device 0 is often not NVML device 0: match by UUID."""
from __future__ import annotations


def cuda_uuid(cuda_index: int = 0) -> str | None:
    """'GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx' of CUDA device `cuda_index`, or None without CUDA."""
    try:
        from stages.gpu.cuda import call

        raw = bytes(call("cudaGetDeviceProperties", cuda_index).uuid.bytes)
    except Exception:  # no driver, no cuda-python: the caller falls back to NVML's numbering
        return None
    h = raw.hex()
    return f"GPU-{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


def nvml_handle(nvml, cuda_index: int = 0):
    """NVML's handle for CUDA device `cuda_index` (nvmlInit already called)."""
    uuid = cuda_uuid(cuda_index)
    if uuid:
        try:
            return nvml.nvmlDeviceGetHandleByUUID(uuid)
        except Exception:  # an NVML too old for this UUID form: fall back to the index
            pass
    return nvml.nvmlDeviceGetHandleByIndex(cuda_index)

"""Which backends can run on this machine, decided without importing heavy frameworks where possible."""
from __future__ import annotations

import importlib.util
import os
import shutil

# Backends in order of preference for `backend=auto`.
PREFERENCE = ("tensorrt", "torch", "onnxruntime")
TRTEXEC_NGC_PATH = "/usr/src/tensorrt/bin/trtexec"  # where NVIDIA's TensorRT container keeps it


def gpu_count() -> int:
    """NVIDIA GPUs visible through NVML (fast, no CUDA context); 0 on a machine without the driver."""
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            return pynvml.nvmlDeviceGetCount()
        finally:
            pynvml.nvmlShutdown()
    except Exception:
        return 0


def check(backend: str, trtexec: str = "trtexec") -> str | None:
    """None when `backend` can run here, else the reason it cannot (`trtexec`: the configured trtexec.path)."""
    if backend == "onnxruntime":
        return None if importlib.util.find_spec("onnxruntime") else "onnxruntime is not installed"
    if backend == "torch":  # runs on CPU too (host-timed); `auto` prefers it only on CUDA, see best()
        return None if importlib.util.find_spec("torch") else "torch is not installed"
    if backend == "tensorrt":
        if importlib.util.find_spec("tensorrt") is None:
            return "TensorRT is not installed"
        return None if gpu_count() else "no NVIDIA GPU found (NVML)"
    if backend == "trtexec":  # not in PREFERENCE: `auto` never picks it
        if not (shutil.which(trtexec) or os.access(TRTEXEC_NGC_PATH, os.X_OK)):
            return f"trtexec.path = '{trtexec}' is not an executable on PATH (nor is {TRTEXEC_NGC_PATH})"
        return None if gpu_count() else "no NVIDIA GPU found (NVML)"
    return f"unknown backend '{backend}'"


def best() -> tuple[str, list[str]]:
    """The preferred backend that can run here, and why each better one was passed over."""
    passed = []
    for backend in PREFERENCE:
        reason = check(backend) or (_torch_cuda() if backend == "torch" else None)
        if reason is None:
            return backend, passed
        passed.append(f"{backend}: {reason}")
    raise RuntimeError("no backend can run here: " + "; ".join(passed))


def _torch_cuda() -> str | None:
    """Why torch is not the best choice here: on a CPU, ONNX Runtime is the better-measured path."""
    if not gpu_count():
        return "no NVIDIA GPU found (NVML)"
    import torch  # only reached on a machine with a GPU

    return None if torch.cuda.is_available() else "torch was built without CUDA or cannot reach the GPU"


_HOW_TO_GET = {
    "tensorrt": "TensorRT's builder comes from NVIDIA: the NGC container nvcr.io/nvidia/tensorrt, or "
                "`pip install tensorrt --extra-index-url https://pypi.nvidia.com` on a machine with an NVIDIA GPU. ",
    "torch": "The torch backend needs a CUDA build of torch and an NVIDIA GPU. ",
    "trtexec": "trtexec ships with TensorRT: NVIDIA's container nvcr.io/nvidia/tensorrt has it at "
               "/usr/src/tensorrt/bin/trtexec; put its directory on PATH. ",
}


def how_to_get(backend: str) -> str:
    """How to get `backend`, then which backends do run here: the end of every 'cannot run here' message."""
    usable = [b for b in PREFERENCE if check(b) is None]
    return f"{_HOW_TO_GET.get(backend, '')}Backends that run here: {', '.join(usable) or 'none'}"

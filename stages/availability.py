"""Whether a backend can run on this machine, from what its plugin declares it needs (`REQUIRES`).

Decided without importing heavy frameworks where possible: modules are looked up, not imported; the GPU is counted
through NVML (no CUDA context); only a backend that needs torch's CUDA imports torch, and only where NVML sees a GPU.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
from dataclasses import dataclass


@dataclass(frozen=True)
class Requires:
    """What a backend needs to run: Python modules, an NVIDIA GPU (of a compute capability), a program."""
    modules: tuple[str, ...] = ()
    gpu: bool = False                                   # an NVIDIA GPU that NVML sees
    torch_cuda: bool = False                            # and a torch built with CUDA that reaches it
    min_compute_capability: tuple[int, int] | None = None
    executable: str | None = None                       # the option naming a program that must be found
    fallbacks: tuple[str, ...] = ()                     # where to look for it beyond PATH
    gpu_when: tuple[tuple[str, tuple], ...] = ()        # (option, values): an NVIDIA GPU when it takes one of them


def unmet(requires: Requires, options: dict | None = None) -> str | None:
    """None when everything `requires` asks for is here, else what is missing (`options`: the backend's)."""
    for module in requires.modules:
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed"
    if requires.executable:
        program = (options or {}).get(requires.executable)
        if not locate(program, requires.fallbacks):
            where = f" (nor is {', '.join(requires.fallbacks)})" if requires.fallbacks else ""
            return f"backend.{requires.executable} = '{program}' is not an executable on PATH{where}"
    asked = [f"backend.{key}={(options or {}).get(key)}" for key, values in requires.gpu_when
             if (options or {}).get(key) in values]
    if requires.gpu or requires.torch_cuda or requires.min_compute_capability or asked:
        if not gpu_count():
            return (f"{' and '.join(asked)} needs an NVIDIA GPU; none found (NVML)" if asked
                    else "no NVIDIA GPU found (NVML)")
    if requires.min_compute_capability:
        have = compute_capability()
        if have is not None and have < requires.min_compute_capability:
            need = ".".join(map(str, requires.min_compute_capability))
            return f"it needs a GPU of compute capability {need} or higher; this one has {have[0]}.{have[1]}"
    if requires.torch_cuda:
        # NVML's count, not cudaGetDeviceCount: the latter starts CUDA in this process, which then could no longer
        # be pinned to a GPU of its own (stages/gpu/pinning.py)
        os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
        import torch  # only reached on a machine with a GPU

        if not torch.cuda.is_available():
            return "torch was built without CUDA or cannot reach the GPU"
    return None


def locate(program: str | None, fallbacks: tuple[str, ...] = ()) -> str | None:
    """The path of `program` (a name on PATH or a path), else the first executable of `fallbacks`; or None."""
    found = shutil.which(program) if program else None
    return found or next((f for f in fallbacks if os.access(f, os.X_OK)), None)


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


def compute_capability() -> tuple[int, int] | None:
    """(major, minor) of the GPU this process's CUDA device 0 is, through NVML; None when unknown."""
    try:
        import pynvml

        from stages.gpu import identity

        pynvml.nvmlInit()
        try:
            return tuple(pynvml.nvmlDeviceGetCudaComputeCapability(identity.nvml_handle(pynvml, 0)))
        finally:
            pynvml.nvmlShutdown()
    except Exception:
        return None

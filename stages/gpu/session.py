"""The one protocol for GPU work in a stage: which GPU, taking turns on it, and watching it.

Every stage that runs work on the GPU (a benchmark, a profile, a validation) does it inside `exclusive()`: the
per-GPU lock keyed by the GPU's UUID, so concurrent jobs on one host never overlap there, and, for a measurement,
the NVML monitor matched to the same GPU by UUID (NVML numbers GPUs ignoring CUDA_VISIBLE_DEVICES). The job's
`env_gpu*` columns come from `identity()`, the same GPU again.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

from stages.gpu import identity as gpu_identity
from stages.gpu import lock, monitor

DEVICE = 0  # CUDA device 0 of this process: CUDA_VISIBLE_DEVICES (a scheduler, a launcher) picks the GPU
MONITOR_INTERVAL_S = 0.1


@contextlib.contextmanager
def exclusive(*, watch: bool = False) -> Iterator[monitor.Monitor | None]:
    """Hold this GPU for the block; with `watch`, sample it meanwhile (yields the Monitor, else None)."""
    with lock.exclusive(DEVICE):
        if not watch:
            yield None
            return
        with monitor.Monitor(DEVICE, MONITOR_INTERVAL_S) as mon:
            yield mon


def identity() -> dict[str, str | None]:
    """The GPU this process measures on: its name, UUID, the driver and the driver's CUDA; Nones without one."""
    none = {"gpu": None, "gpu_uuid": None, "driver": None, "cuda": None}
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:
        return none
    try:
        handle = gpu_identity.nvml_handle(pynvml, DEVICE)
        cuda = pynvml.nvmlSystemGetCudaDriverVersion_v2()
        return {"gpu": pynvml.nvmlDeviceGetName(handle), "gpu_uuid": pynvml.nvmlDeviceGetUUID(handle),
                "driver": pynvml.nvmlSystemGetDriverVersion(), "cuda": f"{cuda // 1000}.{cuda % 1000 // 10}"}
    except Exception:
        return none
    finally:
        pynvml.nvmlShutdown()

"""One GPU per worker process, so that a sweep's parallel workers spread over a host's GPUs.

Every stage measures on CUDA device 0 of its process (stages/gpu/session.py). A process that sees several GPUs
(CUDA_VISIBLE_DEVICES lists several, or it is unset and NVML counts several) would put every job on the first of
them. So before a job starts, its process claims one: the first of its visible GPUs that no other process on the
host holds (a file lock per GPU, held until the process exits, since CUDA cannot move to another GPU once it has
started), and narrows CUDA_VISIBLE_DEVICES to it. Child processes (isolated stages) inherit it. When every GPU is
held (more workers than GPUs), the process shares one, picked by its pid: measurements still take turns on it
(the per-GPU lock of stages/gpu/lock.py), only slower.

A process that sees one GPU or none (a scheduler such as SLURM or Ray already gave it its own) is left as it is.
"""
from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock, Timeout

from stages.gpu import lock

log = logging.getLogger(__name__)

ENV = "CUDA_VISIBLE_DEVICES"
MODES = ("auto", "off")


@dataclass(frozen=True)
class Pin:
    device: str   # the CUDA_VISIBLE_DEVICES entry this process runs on (an index or a UUID, as the host names it)
    shared: bool  # every GPU was held by another process: this one shares `device`


_pinned: Pin | None = None
_held: FileLock | None = None  # kept open for the life of the process


def visible() -> list[str]:
    """The GPUs this process may use, as CUDA_VISIBLE_DEVICES entries (NVML's indices when it is unset)."""
    env = os.environ.get(ENV)
    if env is not None:
        return [entry.strip() for entry in env.split(",") if entry.strip()]
    from stages.availability import gpu_count

    return [str(i) for i in range(gpu_count())]


def pin(mode: str = "auto") -> Pin | None:
    """Claim a GPU for this process (see the module's docstring); the Pin, or None where nothing was pinned."""
    global _pinned, _held
    if mode not in MODES:
        raise ValueError(f"gpu.pin = {mode!r}: valid: {', '.join(MODES)}")
    if mode == "off" or _pinned is not None:
        return _pinned
    devices = visible()
    if len(devices) < 2:
        return None
    if _cuda_started():
        log.warning("this process sees GPUs %s but CUDA has started in it already: it stays where CUDA put it",
                    ",".join(devices))
        return None
    for device in devices:
        claim = FileLock(claim_path(device))
        try:
            claim.acquire(timeout=0)
        except Timeout:
            continue
        _held, _pinned = claim, Pin(device, shared=False)
        break
    else:
        _pinned = Pin(devices[os.getpid() % len(devices)], shared=True)
        log.warning("all %d GPUs (%s) are held by other workers: sharing GPU %s (measurements take turns)",
                    len(devices), ",".join(devices), _pinned.device)
    os.environ[ENV] = _pinned.device
    if not _pinned.device.startswith(("GPU-", "MIG-")):  # an index: in NVML's order, the one the claim names
        os.environ.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    log.info("GPU %s of %s: this process's CUDA device 0", _pinned.device, ",".join(devices))
    return _pinned


def claim_path(device: str) -> Path:
    """One claim lock per GPU on the host, beside the measurement locks: by UUID where NVML knows the device."""
    return lock.lock_dir() / f"pipeline-gpu-claim-{_uuid(device) or device}.lock"


def _uuid(device: str) -> str | None:
    if device.startswith(("GPU-", "MIG-")):
        return device
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            return pynvml.nvmlDeviceGetUUID(pynvml.nvmlDeviceGetHandleByIndex(int(device)))
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # no NVML (a CPU machine, simulated GPUs), or not an index: the entry names the claim
        return None


def _cuda_started() -> bool:
    """torch's CUDA, or our cuda-python calls (once imported, they may have started it: assume so)."""
    torch = sys.modules.get("torch")
    return bool(torch is not None and torch.cuda.is_initialized()) or "stages.gpu.cuda" in sys.modules

"""One measurement at a time per GPU on a host: a file lock keyed by the GPU's UUID.

Jobs running in parallel (joblib, several shells) may export and build at the same time, but two timed
loops on one GPU would each measure the other. The lock covers warm-up, timing and profiling.
"""
from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from pathlib import Path

from filelock import FileLock, Timeout

from stages.gpu import identity

log = logging.getLogger(__name__)
LOCK_DIR_ENV = "PIPELINE_GPU_LOCK_DIR"  # shared directory for the locks (default: the system temp dir)


def gpu_uuid(index: int = 0) -> str:
    """The UUID of CUDA device `index` (the same GPU whatever CUDA_VISIBLE_DEVICES renumbers)."""
    return identity.cuda_uuid(index) or f"cuda-{index}"


def lock_dir() -> Path:
    return Path(os.environ.get(LOCK_DIR_ENV) or tempfile.gettempdir())


def lock_path(index: int = 0) -> Path:
    return lock_dir() / f"pipeline-gpu-{gpu_uuid(index)}.lock"


@contextlib.contextmanager
def exclusive(index: int = 0):
    lock = FileLock(lock_path(index))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log.info("waiting for GPU %d: another job is measuring on it (%s)", index, lock.lock_file)
        lock.acquire()
    try:
        yield
    finally:
        lock.release()

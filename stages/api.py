"""What a stage hands back to the orchestrator, and the two ways it can decline to produce a result.

A stage module exposes:
    VERSION: str             bumped when the stage's output for the same inputs changes (part of the cache key)
    OUTPUTS: tuple[str, ...] names of the artifacts it writes (what downstream `inputs` may name)
    CACHED: bool             artifacts are cached by content; measurements (CACHED = False) always re-run
    environment(params) -> dict   the part of the environment that changes its output (cache key)
    key_files(params) -> dict     digests of user files it reads (cache key); optional
    UNKEYED_PARAMS: tuple         params that change no output (a shared store's location); optional
    CRASH_PRONE: bool             run in a child process under isolation.mode=auto (pipeline/isolation.py); optional
    run(inputs: dict[str, Path], params: dict, out_dir: Path) -> StageResult
Stages never see Hydra: plain arguments in, files and records out.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class Unsupported(Exception):
    """This combination cannot run here (bf16 on a CPU provider, TensorRT not installed...). Not a failure."""


class StageInputError(ValueError):
    """Bad user input (missing or corrupt file). The message names the config key or file."""


@dataclass
class StageResult:
    outputs: dict[str, str] = field(default_factory=dict)  # output name -> file name inside out_dir
    info: dict[str, Any] = field(default_factory=dict)     # scalars for the `runs` row, prefixed with the node name
    tables: dict[str, Any] = field(default_factory=dict)   # table name -> rows (no run_id: the job adds it)


_progress = None  # set by the orchestrator while a job runs: callback(fraction, elapsed_s, target_s)


def set_progress(callback) -> None:
    global _progress
    _progress = callback


def report_progress(fraction: float, elapsed_s: float, target_s: float) -> None:
    """From inside a long measurement: how far along it is (shown to the user; never affects results)."""
    if _progress is not None:
        _progress(fraction, elapsed_s, target_s)


def file_sha256(path: Path) -> str:
    import hashlib

    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def package_version(*dists: str) -> str | None:
    """Installed version of the first distribution found, without importing it (keeps cache look-ups fast)."""
    from importlib import metadata

    for dist in dists:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return None


def onnxruntime_version() -> str | None:
    return package_version("onnxruntime", "onnxruntime-gpu")

"""Run one stage in a child process, so a segfault, an OOM kill or a hang becomes an ordinary error.

An engine build that crashes inside a builder library takes its process with it; under a joblib launcher it would
take the whole batch of jobs too. In a child, the crash is just a non-zero exit: the parent raises
StageCrashed with the signal's name, the job records a `failed` row, and the sweep goes on. A stage can be isolated
when it hands its results over as files plus a small picklable StageResult, and reads only files: artifact stages,
and measuring stages that open the build from its files (a GPU measurement whose CUDA context a bad point poisoned,
or that ran out of memory, takes only its child with it; the parent never touched the GPU for it).
"""
from __future__ import annotations

from pathlib import Path

from stages import child


class StageCrashed(RuntimeError):
    """The child died (signal or exit) or outlived its time limit."""


def _stage(module_name: str, inputs: dict, params: dict, out_dir: str, shared_root, clocked: bool):
    import contextlib
    import importlib

    from pipeline.run import imports
    from stages import api

    api.set_shared_root(shared_root)
    with imports.clock() if clocked else contextlib.nullcontext(imports.Clock()) as imported:
        result = importlib.import_module(module_name).run(inputs, params, Path(out_dir))  # imported afresh here
    return result, imported.seconds


def run_isolated(module_name: str, inputs: dict, params: dict, out_dir: Path, timeout_s: float | None,
                 shared_root: Path | None = None, imported: list[float] | None = None):
    """module.run(inputs, params, out_dir) in a fresh ("spawn") process; its StageResult, or its exception.
    `imported[0]`, where given, is set to the seconds the child spent importing the stage and its libraries (not
    given, no import is timed: pipeline/run/imports.py's hook would weigh on a measurement's timed loop)."""
    args = (module_name, inputs, params, str(out_dir), shared_root, imported is not None)
    try:
        result, seconds = child.call(_stage, args, timeout_s)
    except child.TimedOut as err:
        raise StageCrashed(f"{err} (isolation.timeout_s)") from None
    except child.Crashed as err:
        raise StageCrashed(str(err)) from None
    if imported is not None:
        imported[0] = seconds
    return result

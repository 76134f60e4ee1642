"""Stage implementations: the shared ones here, one folder per backend (its plugin: stages, options, availability).

A DAG node names its stage by import path; `load` imports it only when a job uses it, and checks that the module
is a stage (stages/api.py).
"""
from __future__ import annotations

import importlib
import sys
import time
from types import ModuleType

CONTRACT = ("VERSION", "OUTPUTS", "CACHED", "PARAMS", "run")
# stage -> the seconds its module took to import, from its first `load` in this process until a run takes them
_IMPORTED: dict[str, float] = {}


def load(stage: str) -> ModuleType:
    """The stage module `stage` (e.g. "stages.onnxruntime.build"); ValueError saying why it is not one."""
    fresh, started = stage not in sys.modules, time.perf_counter()
    try:
        module = importlib.import_module(stage)
    except Exception as err:  # noqa: BLE001 - not found, or it fails to import: either way no stage
        raise ValueError(f"cannot import it ({type(err).__name__}: {err})") from None
    if fresh:
        _IMPORTED[stage] = time.perf_counter() - started
    missing = [name for name in CONTRACT if not hasattr(module, name)]
    if missing:
        raise ValueError(f"module {stage} is not a stage: it lacks {', '.join(missing)} (see stages/api.py)")
    return module


def take_import_seconds(stage: str) -> float:
    """The seconds the first `load` of `stage` spent importing it (a job loads its stages before it runs them),
    once: the run that takes them counts them as its import; 0.0 after that, or if it was imported otherwise."""
    return _IMPORTED.pop(stage, 0.0)

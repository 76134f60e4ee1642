"""Stage implementations: the shared ones here, one folder per backend (its plugin: stages, options, availability).

A DAG node names its stage by import path; `load` imports it only when a job uses it, and checks that the module
is a stage (stages/api.py).
"""
from __future__ import annotations

import importlib
from types import ModuleType

CONTRACT = ("VERSION", "OUTPUTS", "CACHED", "PARAMS", "run")


def load(stage: str) -> ModuleType:
    """The stage module `stage` (e.g. "stages.onnxruntime.build"); ValueError saying why it is not one."""
    try:
        module = importlib.import_module(stage)
    except Exception as err:  # noqa: BLE001 - not found, or it fails to import: either way no stage
        raise ValueError(f"cannot import it ({type(err).__name__}: {err})") from None
    missing = [name for name in CONTRACT if not hasattr(module, name)]
    if missing:
        raise ValueError(f"module {stage} is not a stage: it lacks {', '.join(missing)} (see stages/api.py)")
    return module

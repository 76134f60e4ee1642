"""The stage contract: what a stage declares, what it hands back, and the two ways it declines to give a result.

A stage is a module, named in a DAG node by its import path (`stage: stages.onnxruntime.build`). It exposes:
    VERSION: str             bumped when the stage's output for the same inputs changes (part of the cache key)
    OUTPUTS: tuple[str, ...] names of the artifacts it writes (what downstream `inputs` may name)
    CACHED: bool             artifacts are cached by content; measurements (CACHED = False) always re-run
    PARAMS: dict[str, Param] every parameter it takes, typed: a DAG node's params are checked against it
                             before anything runs (a misspelled, missing or mistyped one names the node and key)
    run(inputs: dict[str, Path], params: dict, out_dir: Path) -> StageResult
and optionally:
    BACKEND_OPTIONS: tuple[str, ...] | "all"
                                  the backend options it takes (`backend.<key>`: typed once, in its plugin's
                                  OPTIONS, valued in the backend's YAML): the runner adds them to its params, so
                                  no YAML wires them and PARAMS does not declare them again (`declared`); they
                                  are in its cache key as the plugin declares them (keyed=False: not)
    environment(params) -> dict   the part of the environment that changes its output (cache key)
    key_files(params) -> dict     digests of user files it reads (cache key)
    key_extra(params) -> dict     what a param declared keyed=False decides after all in this case (cache key):
                                  the convert stage's calibration data depends on the axes' sizes, its links do not
    CRASH_PRONE: bool             run in a child process under isolation.mode=auto (pipeline/run/isolation.py)
    crash_prone(params) -> bool   a measuring (not cached) stage: whether it runs in a child process (unless
                                  isolation.mode=none); the shared measuring stages ask the backend (stages/runtime.py)
    check_served(outputs, params) on a cache hit: refuse a param the key leaves out (keyed=False) that does not
                                  fit the artifact served; run() checks it on a miss (the export: the data)
A cached stage's `tables` are stored with its artifact and given to every job that uses it, on a miss and on a
hit alike: they describe the artifact (its build), not one run. Stages never see Hydra: plain arguments in,
files and records out. A stage that keeps state across builds (TensorRT's timing cache) keeps it under
`shared_dir(name)`, which the runner points into the artifact cache.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class Unsupported(Exception):
    """This combination cannot run here (bf16 on a CPU provider, TensorRT not installed...). Not a failure."""


class StageInputError(ValueError):
    """Bad user input (missing or corrupt file). The message names the config key or file."""


class ParamError(StageInputError):
    """A parameter (or backend option) that its declaration refuses; the message names the key."""


@dataclass(frozen=True)
class Param:
    """A declared parameter of a stage, or an option of a backend (`backend.<key>`)."""
    type: type | tuple[type, ...]   # float accepts an int; bool is never taken for an int
    optional: bool = False          # None is valid too, and so is leaving it out
    choices: tuple = ()
    min: float | None = None
    max: float | None = None
    keyed: bool = True              # False: it changes no result (a tool's location): not in cache keys or config_hash
    executable: bool = False        # it names a program that is run: a recorded config needs trust to reproduce
    doc: str = ""
    # An option added after configs were recorded: the value they implied. Leaving it out means this value, and
    # this value is left out of cache keys and config_hash, so those configs (and today's) keep their identity.
    implied: Any = None


def check_params(spec: dict[str, Param], values: dict, where: str) -> None:
    """Raise ParamError for the first key of `values` that `spec` does not declare, misses or refuses."""
    unknown = sorted(set(values) - set(spec))
    if unknown:
        raise ParamError(f"{where}.{unknown[0]}: not a parameter here; valid: {', '.join(sorted(spec)) or 'none'}")
    missing = sorted(k for k in set(spec) - set(values) if not spec[k].optional and spec[k].implied is None)
    if missing:  # an optional one, or one with an implied value, may be left out
        raise ParamError(f"{where}.{missing[0]}: missing; this needs {', '.join(sorted(spec))}")
    for key, param in spec.items():
        if key not in values and param.implied is not None:
            continue
        problem = _problem(param, values.get(key))
        if problem:
            raise ParamError(f"{where}.{key} = {values[key]!r}: {problem}")


def _problem(param: Param, value: Any) -> str | None:
    if value is None:
        return None if param.optional else "must be set"
    types = param.type if isinstance(param.type, tuple) else (param.type,)
    if float in types and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
        return f"expected {' or '.join(t.__name__ for t in types)}, got {type(value).__name__}"
    if param.choices and value not in param.choices:
        return f"valid: {', '.join(map(str, param.choices))}"
    if isinstance(value, float) and not math.isfinite(value):
        return "must be a finite number"
    if param.min is not None and value < param.min or param.max is not None and value > param.max:
        bounds = f"{param.min}..{param.max}" if param.min is not None and param.max is not None else (
            f">= {param.min}" if param.min is not None else f"<= {param.max}")
        return f"out of range; valid: {bounds}"
    return None


def keyed(spec: dict[str, Param], values: dict) -> dict:
    """`values` without those its declaration marks as changing no result, nor those at their implied value (the
    one configs from before the param meant: they hash as they did)."""
    return {k: v for k, v in values.items()
            if k not in spec or (spec[k].keyed and (spec[k].implied is None or v != spec[k].implied))}


def with_implied(spec: dict[str, Param], values: dict) -> dict:
    """`values` with the implied value of each param of `spec` they leave out."""
    return {**{k: p.implied for k, p in spec.items() if p.implied is not None and k not in values}, **values}


def backend_options(module: Any, offered: dict[str, Param]) -> dict[str, Param]:
    """The backend options a stage takes (its BACKEND_OPTIONS: names, or "all"), declared as `offered` (the
    backend plugin's OPTIONS) declares them. ValueError if it names one that `offered` lacks."""
    names = getattr(module, "BACKEND_OPTIONS", ())
    if names == "all":
        return dict(offered)
    missing = [n for n in names if n not in offered]
    if missing:
        raise ValueError(f"it takes the backend option '{missing[0]}', which this backend's plugin does not declare "
                         f"(its OPTIONS: {', '.join(sorted(offered)) or 'none'})")
    return {n: offered[n] for n in names}


def declared(module: Any, offered: dict[str, Param]) -> dict[str, Param]:
    """Every param a stage takes: its PARAMS and the backend options it takes (see backend_options)."""
    return {**module.PARAMS, **backend_options(module, offered)}


_shared_root: Path | None = None  # set by the runner: where stages keep state shared across builds


def set_shared_root(root: Path | None) -> None:
    global _shared_root
    _shared_root = root


def shared_dir(name: str) -> Path:
    """A directory for state a stage shares across builds and jobs (under the artifact cache's directory)."""
    if _shared_root is None:
        raise RuntimeError("no shared directory: this stage runs outside a job (set_shared_root was not called)")
    path = _shared_root / name
    path.mkdir(parents=True, exist_ok=True)
    return path


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
    return next((v for v in map(_version, dists) if v is not None), None)


@functools.lru_cache(maxsize=None)
def _version(dist: str) -> str | None:
    """Read once a process: each look-up parses the distribution's METADATA (milliseconds, on every job's cache
    keys), and the code a process has imported does not change with a later install either."""
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def onnxruntime_version() -> str | None:
    return package_version("onnxruntime", "onnxruntime-gpu")

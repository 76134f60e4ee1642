"""Which values of a recorded config would run code, and whether that code is this project's.

A config names code in three ways: a `_target_` (a callable that is imported and called: a model factory, a data
loader, a metric), a module (`backend.plugin`, each DAG node's `stage`), and an executable (a backend option its
plugin declares `executable`, a path to a command-line tool). Running a config someone sent runs that code, so
`python -m pipeline.reproduce` refuses what lies outside this project unless the user trusts it. An executable
given as a bare name is looked up on the user's own PATH (their tools); one given as a path needs trust.

Trust is decided on what a target resolves to, not on how it is spelled: `pipeline.app:os.system` starts with
`pipeline.` but names `os.system`. A target is trusted when its module part is under a trusted package (checked
by name, before anything is imported), and, after importing that module (trusted code), every attribute on the
way to the final object stays inside trusted modules and the final object is defined in one.
"""
from __future__ import annotations

import importlib
import inspect
import os
from typing import Any

TRUSTED_PACKAGES = ("pipeline", "stages")


def untrusted(config: Any, allowed: tuple[str, ...] = ()) -> list[str]:
    """`key = 'value' (why)` for every value of `config` that would run code from outside the project and
    `allowed` (module names, or executable paths)."""
    trusted = (*TRUSTED_PACKAGES, *(a.rstrip(".") for a in allowed))
    named = list(_targets(config))
    backend = config.get("backend") if isinstance(config, dict) else None
    if isinstance(backend, dict):
        if isinstance(backend.get("plugin"), str):
            named.append(("backend.plugin", backend["plugin"]))
        for node, spec in (backend.get("dag") or {}).items():
            if isinstance(spec, dict) and isinstance(spec.get("stage"), str):
                named.append((f"backend.dag.{node}.stage", spec["stage"]))
    found = [f"{key} = '{value}' ({why})" for key, value in named if (why := target_problem(value, trusted))]
    plugin = backend.get("plugin") if isinstance(backend, dict) else None
    if isinstance(plugin, str) and target_problem(plugin, trusted) is None:  # only a trusted plugin is asked
        for key, value in _executables(backend):
            if os.sep in value and value not in allowed:
                found.append(f"backend.{key} = '{value}' (an executable that would be run)")
    return found


def _executables(backend: dict) -> list[tuple[str, str]]:
    """The options that the (trusted) plugin declares executable, with their values."""
    try:
        options = importlib.import_module(backend["plugin"]).OPTIONS
    except Exception:  # noqa: BLE001 - no plugin to ask: nothing declared (the job itself will fail on it)
        return []
    return [(k, backend[k]) for k, p in options.items() if p.executable and isinstance(backend.get(k), str)]


def target_problem(target: str, trusted: tuple[str, ...]) -> str | None:
    """None when `target` resolves to an object defined in a trusted module; else why not."""
    dotted = target.replace(":", ".")
    if not _under(dotted, trusted):
        return "code from outside this project"
    parts = dotted.split(".")
    obj, rest = None, parts
    for i in range(len(parts), 0, -1):  # the longest importable prefix: trusted by name, so safe to import
        try:
            obj, rest = importlib.import_module(".".join(parts[:i])), parts[i:]
            break
        except ImportError:
            continue
    if obj is None:
        return "no such module"
    for part in rest:
        obj = getattr(obj, part, None)
        if obj is None:
            return f"no attribute '{part}'"
        if inspect.ismodule(obj) and not _under(obj.__name__, trusted):
            return f"its attribute chain leaves the project for module '{obj.__name__}'"
    home = obj.__name__ if inspect.ismodule(obj) else getattr(obj, "__module__", None) or type(obj).__module__
    if not isinstance(home, str) or not _under(home, trusted):
        return f"it resolves to an object defined in '{home}'"
    return None


def _under(name: str, packages: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in packages)


def _targets(config: Any, path: str = ""):
    if isinstance(config, dict):
        for key, value in config.items():
            here = f"{path}.{key}" if path else str(key)
            if key == "_target_" and isinstance(value, str):
                yield here, value
            else:
                yield from _targets(value, here)
    elif isinstance(config, list):
        for i, value in enumerate(config):
            yield from _targets(value, f"{path}[{i}]")


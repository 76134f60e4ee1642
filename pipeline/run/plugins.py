"""Backends as plugins: the package a backend's config names, its options, whether it can run here.

A backend is `conf/backend/<name>.yaml` (its DAG, its option values, and `plugin:`, the Python package that holds
its stages) plus that package, which declares `OPTIONS` (typed, stages.api.Param), `REQUIRES`
(stages.availability.Requires) and `HOW_TO_GET`. Nothing here names a backend: `backend=auto` takes, of its
candidates, the one of highest priority that can run on this machine. The candidates are those
`conf/backend/auto.yaml` lists, each with its priority, and the backends other installed packages declare (entry
points, pipeline/config/paths.py) whose plugin sets `AUTO_PRIORITY` (an int); on a tie the listed one comes first.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import yaml

from pipeline.config.schema import ConfigError
from stages import api, availability
from stages.api import Unsupported

RESERVED = ("name", "plugin", "dag", "artifact")  # keys of a backend's config that are not its options
PLUGIN_CONTRACT = ("OPTIONS", "REQUIRES", "HOW_TO_GET")


def plugin(backend: dict) -> ModuleType:
    """The package `backend.plugin` names, checked to be a backend plugin."""
    name = backend.get("plugin")
    if not name:
        raise ConfigError(f"backend.plugin is not set in backend={backend.get('name')}: a backend's YAML names the "
                          f"package of its stages, e.g. `plugin: mypackage.mybackend`")
    try:
        module = importlib.import_module(name)
    except Exception as err:  # noqa: BLE001 - not installed, or broken: the same answer
        raise ConfigError(f"backend.plugin = '{name}': cannot import it ({type(err).__name__}: {err})") from None
    missing = [k for k in PLUGIN_CONTRACT if not hasattr(module, k)]
    if missing:
        raise ConfigError(f"backend.plugin = '{name}' is not a backend plugin: it lacks {', '.join(missing)}")
    return module


def options(backend: dict) -> dict:
    return {k: v for k, v in backend.items() if k not in RESERVED}


def check(backend: dict) -> None:
    """Refuse a backend whose options its plugin refuses (ConfigError) or that cannot run here (Unsupported)."""
    module = plugin(backend)
    try:
        api.check_params(module.OPTIONS, options(backend), "backend")
    except api.ParamError as err:
        raise ConfigError(str(err)) from None
    reason = availability.unmet(module.REQUIRES, options(backend))
    if reason:
        runnable = ", ".join(runnable_here()) or "none"
        raise Unsupported(f"backend={backend['name']} cannot run here: {reason}. {module.HOW_TO_GET} "
                          f"Backends that run here: {runnable}")


def keyed_options(backend: dict) -> dict:
    """The backend's options that can change a result (for config_hash); all of them if the plugin is missing."""
    try:
        return api.keyed(plugin(backend).OPTIONS, options(backend))
    except ConfigError:
        return options(backend)


@dataclass(frozen=True)
class Candidate:
    name: str
    plugin: str             # its plugin package
    priority: int | None    # None: an installed backend whose plugin does not import (it cannot say)
    where: str              # where it comes from: conf/backend/auto.yaml, or the distribution that installs it


def ranked(conf_dir: str | Path) -> list[Candidate]:
    """`backend=auto`'s candidates in order of preference: highest priority first; on a tie auto.yaml's before
    installed ones (by name). An installed backend whose plugin does not import comes first, to be passed over
    with the reason. One that takes a listed name is not a candidate (the pipeline's config of that name wins)."""
    from pipeline.config import paths

    spec = yaml.safe_load((Path(conf_dir) / "backend" / "auto.yaml").read_text())
    listed = []
    for name, entry in (spec.get("candidates") or {}).items():
        if not (isinstance(entry, dict) and isinstance(entry.get("plugin"), str)
                and isinstance(entry.get("priority"), int)):
            raise ConfigError(f"conf/backend/auto.yaml: candidate {name} must be {{plugin: <package>, priority: "
                              f"<int>}}, not {entry!r}")
        listed.append(Candidate(name, entry["plugin"], entry["priority"], "conf/backend/auto.yaml"))
    installed = []
    for backend in sorted(paths.installed_backends(), key=lambda b: b.name):
        if backend.name in {c.name for c in listed}:
            continue
        try:
            priority = getattr(importlib.import_module(backend.plugin), "AUTO_PRIORITY", None)
        except Exception:  # noqa: BLE001 - reported when auto passes it over
            installed.append(Candidate(backend.name, backend.plugin, None, backend.distribution))
            continue
        if isinstance(priority, int) and not isinstance(priority, bool):
            installed.append(Candidate(backend.name, backend.plugin, priority, backend.distribution))
    everyone = listed + installed  # the sort is stable: a tie keeps this order
    return sorted(everyone, key=lambda c: (0, 0) if c.priority is None else (1, -c.priority))


def candidates(conf_dir: str | Path) -> dict[str, str]:
    """`backend=auto`'s candidates in order of preference: name -> plugin package."""
    return {c.name: c.plugin for c in ranked(conf_dir)}


def best(conf_dir: str | Path) -> tuple[str, list[str]]:
    """The preferred candidate that can run here, and why each better one was passed over."""
    passed = []
    for name, package in candidates(conf_dir).items():
        reason = _auto_unmet(package)
        if reason is None:
            return name, passed
        passed.append(f"{name}: {reason}")
    raise Unsupported("no backend can run here: " + "; ".join(passed))


def runnable_here(conf_dir: str | Path | None = None) -> list[str]:
    from pipeline.config import paths

    return [n for n, package in candidates(conf_dir or paths.CONF_DIR).items() if _auto_unmet(package) is None]


def _auto_unmet(package: str) -> str | None:
    try:
        module = importlib.import_module(package)
    except Exception as err:  # noqa: BLE001
        return f"its plugin {package} does not import ({type(err).__name__})"
    return availability.unmet(getattr(module, "AUTO_REQUIRES", module.REQUIRES), {})

"""Which values of a recorded config would run code, and whether that code is this project's.

A config names code in three ways: a callable that is imported and called (a `_target_`: a model factory, a data
loader, a metric), a module (`backend.plugin`, each DAG node's `stage`) and an executable (a param or backend
option declared `executable`: a path to a command-line tool). Running a config someone sent runs that code, so
`python -m pipeline.reproduce` refuses what it cannot vouch for unless the user trusts it.

The rules, all checked before anything runs:
- Every value that names code is checked, at any depth of the config: the value of every key in CODE_KEYS
  (`_target_`, `target`, `module_name`, `stage`, `plugin`...), wherever it sits (a factory's kwargs, a data
  loader's arguments, a DAG node's params). A key's spelling is all it takes: a trampoline's argument is caught
  under whatever key it is given.
- A name is trusted on what it resolves to, not on its spelling (`pipeline.run.app:os.system` is `os.system`): its
  module part must lie under a trusted package (checked by name, before anything is imported), and, after
  importing that module (trusted code), every attribute on the way to the final object stays inside trusted
  modules and the object is defined in one.
- A module of the project may be named (a stage, a plugin). A callable of the project may be named only if it is
  in TARGETS: those build a model or data from plain values. Every other project callable is refused, because
  many of them take a name of code and run it (`stages.targets.load_factory(target)`,
  `pipeline.run.isolation.run_isolated(module_name)`, a stage's `run(params)` with an executable in its params):
  a positive list cannot grow a hole when such a function is added. `--allow` a callable (or its module) to
  trust it all the same.
- Executables: every param that the (trusted) stage of a DAG node declares `executable`, and every such option of
  the (trusted) backend plugin. A bare name is looked up on the user's own PATH (their tools); a path needs trust.
What the user allows (`allowed`: modules, callables, executable paths) is trusted as a whole.

A backend another installed package declares (an entry point of `trt_pipeline.backends`, pipeline/config/paths.py)
is not trusted for being installed: its plugin and stages lie outside TRUSTED_PACKAGES, so reproducing a config
that names them needs `--allow <its package>` (or --trust), as any other code from outside the project. Being
installed says the user chose to run it here, not that a config someone sent may.
"""
from __future__ import annotations

import importlib
import inspect
import os
from typing import Any

TRUSTED_PACKAGES = ("pipeline", "stages")
# The project's callables that a config may name as code: they build a model or a data set from plain values, or
# are Hydra callbacks (the sweep's summary, the precision planner, MLflow tracking). None takes a name of code
# (tests/test_reproduce_trust.py checks their parameters).
TARGETS = frozenset({"stages.datasets.digits", "stages.models.build_builtin", "stages.outlier_model.outlier_mlp",
                     "stages.hf_datasets.load", "pipeline.run.app.SweepSummary", "pipeline.run.planner.PlanCallback",
                     "pipeline.run.mlflow_tracking.MlflowTracking"})
# Keys whose (string) value names a callable or a module, wherever they appear in a config.
CODE_KEYS = frozenset({"_target_", "target", "module_name", "module", "stage", "plugin", "package", "factory",
                       "function", "callable"})


def untrusted(config: Any, allowed: tuple[str, ...] = ()) -> list[str]:
    """`key = 'value' (why)` for every value of `config` that would run code from outside the project and
    `allowed` (modules, callables, or executable paths)."""
    allowed = tuple(a.rstrip(".") for a in allowed)
    found = [f"{key} = '{value}' ({why})" for key, value in _code_values(config)
             if (why := target_problem(value, allowed))]
    backend = config.get("backend") if isinstance(config, dict) else None
    if not isinstance(backend, dict):
        return found
    executables = []
    plugin = backend.get("plugin")
    if isinstance(plugin, str) and target_problem(plugin, allowed) is None:  # only trusted code is asked
        executables += [(f"backend.{k}", v) for k, v in _executables(plugin, "OPTIONS", backend)]
    dag = backend.get("dag")
    for node, spec in (dag.items() if isinstance(dag, dict) else ()):
        stage = spec.get("stage") if isinstance(spec, dict) else None
        params = spec.get("params") if isinstance(spec, dict) else None
        if isinstance(stage, str) and isinstance(params, dict) and target_problem(stage, allowed) is None:
            executables += [(f"backend.dag.{node}.params.{k}", v)
                            for k, v in _stage_executables(stage, params, plugin, allowed)]
    found += [f"{key} = '{value}' (an executable that would be run)" for key, value in executables
              if os.sep in value and value not in allowed]
    return found


def _executables(module: str, attr: str, values: dict) -> list[tuple[str, str]]:
    """The keys of `values` that the (trusted) module's `attr` (OPTIONS, PARAMS) declares executable."""
    try:
        declared = getattr(importlib.import_module(module), attr)
        names = [k for k, p in declared.items() if getattr(p, "executable", False)]
    except Exception:  # noqa: BLE001 - nothing to ask: nothing declared (the job itself refuses such a module)
        return []
    return [(k, values[k]) for k in names if isinstance(values.get(k), str)]


def _stage_executables(stage: str, params: dict, plugin: Any, allowed: tuple[str, ...]) -> list[tuple[str, str]]:
    """The keys of a node's `params` that its (trusted) stage declares executable, or that it takes as a backend
    option (BACKEND_OPTIONS) which the (trusted) plugin declares executable or does not declare at all (the runner
    refuses a node that lists a backend option; a path there is still one that would be run)."""
    found = _executables(stage, "PARAMS", params)
    try:
        module = importlib.import_module(stage)
        takes = getattr(module, "BACKEND_OPTIONS", ())
        offered = {}
        if isinstance(plugin, str) and target_problem(plugin, allowed) is None:
            offered = dict(getattr(importlib.import_module(plugin), "OPTIONS", {}))
    except Exception:  # noqa: BLE001 - as _executables
        return found
    names = set(params) - set(module.PARAMS) if takes == "all" else set(takes) & set(params)
    found += [(k, params[k]) for k in sorted(names) if isinstance(params[k], str) and
              (k not in offered or getattr(offered[k], "executable", False)) and (k, params[k]) not in found]
    return found


def target_problem(target: str, allowed: tuple[str, ...] = ()) -> str | None:
    """None when `target` resolves to a module of a trusted package, a callable in TARGETS or anything the user
    allows; else why not."""
    trusted = (*TRUSTED_PACKAGES, *allowed)
    dotted = target.strip().replace(":", ".")
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
        except Exception as err:  # noqa: BLE001 - a trusted module that fails to import: nothing to resolve
            return f"it does not import ({type(err).__name__})"
    if obj is None:
        return "no such module"
    for part in rest:
        obj = getattr(obj, part, None)
        if obj is None:
            return f"no attribute '{part}'"
        if inspect.ismodule(obj) and not _under(obj.__name__, trusted):
            return f"its attribute chain leaves the project for module '{obj.__name__}'"
    if inspect.ismodule(obj):
        return None
    home = getattr(obj, "__module__", None) or type(obj).__module__
    if not isinstance(home, str) or not _under(home, trusted):
        return f"it resolves to an object defined in '{home}'"
    name = f"{home}.{getattr(obj, '__qualname__', '')}"
    if _under(home, TRUSTED_PACKAGES) and name not in TARGETS and not _under(name, allowed) \
            and not _under(dotted, allowed):
        return (f"a function of this project that a config may not name: only {', '.join(sorted(TARGETS))} may "
                f"be (others, such as a loader taking a target or a module name, would run anything)")
    return None


def _under(name: str, packages: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in packages)


def _code_values(config: Any, path: str = "", names_code: bool = False):
    """(key, value) of every string that names code: under a key of CODE_KEYS, at any depth (in a list under
    such a key too)."""
    if isinstance(config, dict):
        for key, value in config.items():
            here = f"{path}.{key}" if path else str(key)
            yield from _code_values(value, here, key in CODE_KEYS)
    elif isinstance(config, list):
        for i, value in enumerate(config):
            yield from _code_values(value, f"{path}[{i}]", names_code)
    elif isinstance(config, str) and names_code:
        yield path, config

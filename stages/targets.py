"""Code a config names: `package.module.function` (or `package.module:function`) resolved and called, and what
a cache key must hold of it (the digest of the user's own modules it comes from).

* ``resolve(target, key)``: the module and the callable a target names, one line naming `key` if it cannot be had
* ``load_factory(target, kwargs=None)``: a user's model factory, called
* ``factory_source_digest(target)``: sha256 of the user's code the factory's model comes from (cache key)
* ``warn_unkeyed(model, target)``: name the modules of a built model's classes that digest does not cover
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.util
import os
import sys
from typing import Any

from stages.api import StageInputError, package_version


def _split_target(target: Any, key: str) -> tuple[str, str]:
    if not isinstance(target, str) or not target.strip():
        raise StageInputError(f"{key}: expected 'package.module.function' or 'package.module:function', "
                              f"got {target!r}")
    t = target.strip()
    if ":" in t:
        module_name, _, attr = t.partition(":")
    else:
        module_name, _, attr = t.rpartition(".")
    if not module_name or not attr:
        raise StageInputError(f"{key}: {target!r} is not of the form 'package.module.function' or "
                              f"'package.module:function'")
    return module_name, attr


def resolve(target: str, key: str = "model._target_") -> tuple[Any, Any]:
    """Import the target; return (module, the callable). Errors name `key` (StageInputError, a ValueError)."""
    module_name, attr = _split_target(target, key)
    try:
        module = importlib.import_module(module_name)
    except Exception as e:  # ImportError, SyntaxError, errors raised while the module runs ...
        raise StageInputError(
            f"{key}: cannot import module {module_name!r} of {target!r}: {type(e).__name__}: {e}") from e
    obj: Any = module
    try:
        for part in attr.split("."):
            obj = getattr(obj, part)
    except AttributeError as e:
        raise StageInputError(f"{key}: {target!r}: module {module_name!r} has no attribute {attr!r} ({e})") from e
    if not callable(obj):
        raise StageInputError(f"{key}: {target!r} is not callable (it is a {type(obj).__name__})")
    return module, obj


def _plain_kwargs(kwargs: Any) -> dict:
    if kwargs is None:
        return {}
    if not isinstance(kwargs, dict):
        kwargs = dict(kwargs)
    if not all(isinstance(k, str) for k in kwargs):
        raise ValueError(f"model.kwargs: keys must be strings, got {list(kwargs)!r}")
    return dict(kwargs)


def load_factory(target: str, kwargs: dict | None = None):
    """Import ``target`` ("pkg.mod.fn" or "pkg.mod:fn"), call it with ``kwargs``; return the module in eval()."""
    _, factory = resolve(target)
    kw = _plain_kwargs(kwargs)
    model = factory(**kw)

    import torch

    if not isinstance(model, torch.nn.Module):
        raise TypeError(
            f"model._target_: {target!r} returned {type(model).__module__}.{type(model).__qualname__}, "
            "expected a torch.nn.Module"
        )
    return model.eval()


def factory_source_digest(target: str, key: str = "model._target_") -> str | None:
    """sha256 (hex) over the user's code that the factory named by ``target`` builds its model from, and the
    versions of the installed packages that code imports; None if neither exists (``builtins.len``).

    It is part of the export's cache key, so it runs on every cache look-up, before any model exists: it works
    from the source, not from a built model. It starts at the module that defines the factory (imported already,
    to resolve it) and follows every import statement in that file, at module level and inside functions,
    relative ones resolved, to the modules they name (``find_spec``: a module not imported yet is located, not
    run). A module whose file lies outside the standard library and the installed packages (site-packages,
    sys.prefix) is the user's code: its file's content enters the digest and its own imports are followed in
    turn. An installed module enters by the version of the distribution that provides it (timm, transformers,
    torchvision...); the standard library is covered by the Python version. Files are read from disk on every
    call, so the digest follows edits even when the modules are already imported, and everything is sorted by
    name, so the same code gives the same digest in any process. A model class reached only through a dynamic
    import (importlib by a string) is not seen here: ``warn_unkeyed`` names such modules once the model is built.
    """
    files, dists = _user_code(target, key)
    if not files and not dists:
        return None
    h = hashlib.sha256()
    for name in sorted(files):
        with open(files[name], "rb") as f:
            h.update(f"{name}\0{hashlib.sha256(f.read()).hexdigest()}\n".encode())
    for dist in sorted(dists):
        h.update(f"{dist}=={dists[dist]}\n".encode())
    return h.hexdigest()


def warn_unkeyed(model: Any, target: str) -> list[str]:
    """Log, and return, the modules that classes of the built ``model`` come from but that
    ``factory_source_digest(target)`` does not cover: edits to them would not change the cache key."""
    files, dists = _user_code(target)
    missing = []
    for name in sorted({type(m).__module__ for m in model.modules()}):
        kind, _ = _classify(name)
        if kind == "user" and name not in files:
            missing.append(name)
        elif kind == "installed" and not _distributions(name).issubset(dists.items()):
            missing.append(name)
    if missing:
        import logging

        logging.getLogger(__name__).warning(
            "model._target_ = %r: classes of this model come from %s, which its source never imports; edits to "
            "them do not change the cache key (import them in the factory's module)", target, ", ".join(missing))
    return missing


def _user_code(target: str, key: str = "model._target_") -> tuple[dict[str, str], dict[str, str | None]]:
    """(user module name -> file, distribution -> version) reachable by import from the factory's module."""
    module, factory = resolve(target, key)
    roots = {module.__name__, getattr(factory, "__module__", None) or module.__name__}
    # with their parent packages: importing a.b runs a/__init__.py too
    todo = sorted({".".join(r.split(".")[:i]) for r in roots for i in range(1, r.count(".") + 2)})
    files: dict[str, str] = {}
    dists: dict[str, str | None] = {}
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        kind, path = _classify(name)
        if kind == "installed":
            dists.update(_distributions(name))
        elif kind == "user" and path is not None and os.path.isfile(path):  # a namespace package has no file
            files[name] = path
            if path.endswith(".py"):
                todo += sorted(_imports(name, path) - seen)
    return files, dists


def _classify(name: str) -> tuple[str, str | None]:
    """("stdlib" | "installed" | "user" | "none", its file): a package's top level decides the first two."""
    top = name.partition(".")[0]
    if top in sys.stdlib_module_names or top in sys.builtin_module_names:
        return "stdlib", None
    top_path = _module_path(top)
    if top_path is None:
        return "none", None  # not importable here (an optional import), or built into the interpreter
    if _installed(top_path):
        return "installed", None
    return "user", _module_path(name) if name != top else top_path


def _module_path(name: str) -> str | None:
    """The file of a module (a namespace package: its directory), without running a module not imported yet."""
    module = sys.modules.get(name)
    if module is not None:
        path = getattr(module, "__file__", None)
        locations = list(getattr(module, "__path__", None) or ())
    else:
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError, AttributeError):  # e.g. `from pkg import function`: no module pkg.function
            return None
        if spec is None:
            return None
        path = spec.origin if spec.has_location else None
        locations = list(spec.submodule_search_locations or ())
    return path or (locations[0] if locations else None)


@functools.lru_cache(maxsize=None)
def _installed_roots() -> tuple[str, ...]:
    """site-packages and the standard library's directories. Not sys.prefix as a whole: with a system Python
    (prefix /usr), a project in /usr/src/app is the user's code."""
    import site
    import sysconfig

    paths = sysconfig.get_paths()
    roots = {*site.getsitepackages(), site.getusersitepackages(), paths["purelib"], paths["platlib"],
             paths["stdlib"], paths["platstdlib"]}
    return tuple(sorted(os.path.realpath(r) for r in roots if r))


def _installed(path: str) -> bool:
    real = os.path.realpath(path)
    if {"site-packages", "dist-packages"} & set(real.split(os.sep)):  # another environment's, or Debian's
        return True
    return any(real == root or real.startswith(root + os.sep) for root in _installed_roots())


def _imports(name: str, path: str) -> set[str]:
    """Every module an import statement in ``path`` (module ``name``) names, with its parent packages, and for
    ``from pkg import x`` also ``pkg.x`` (x may be a submodule)."""
    try:
        with open(path, "rb") as f:
            source = f.read()
    except OSError:
        return set()
    return set(_parsed_imports(name, path, source))


@functools.lru_cache(maxsize=256)
def _parsed_imports(name: str, path: str, source: bytes) -> frozenset[str]:
    """_imports of a file's bytes, parsed once a process for the same bytes (every cache look-up asks again)."""
    import ast

    try:
        tree = ast.parse(source, filename=path)
    except (SyntaxError, ValueError):
        return frozenset()
    package = name if path.endswith("__init__.py") else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            bases, names = [alias.name for alias in node.names], []
        elif isinstance(node, ast.ImportFrom):
            try:
                base = importlib.util.resolve_name("." * node.level + (node.module or ""), package) \
                    if node.level else node.module
            except (ImportError, ValueError):  # a relative import beyond the top-level package
                continue
            bases, names = [base], [f"{base}.{alias.name}" for alias in node.names if alias.name != "*"]
        else:
            continue
        for base in bases:
            parts = base.split(".")
            found.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
        found.update(names)
    return frozenset(found)


@functools.lru_cache(maxsize=None)
def _packages() -> dict[str, list[str]]:
    from importlib import metadata

    return metadata.packages_distributions()  # top-level import name -> distributions (yaml -> PyYAML)


def _distributions(name: str) -> set[tuple[str, str | None]]:
    return {(dist, package_version(dist)) for dist in _packages().get(name.partition(".")[0], ())}

"""How long a stage spends importing, so that its `<stage>_seconds` counts its work alone.

A stage imports its heavy libraries (torch, onnx, TensorRT) on first use, inside its `run`: paid once per process,
and on a loaded machine it took an export 74 s, which is no part of the build. While a `clock()` is open, every
`import` statement and `importlib.import_module` call on its thread adds its time to it, the outermost import only
(torch importing numpy is torch's import). Other threads are not counted. The hooks are in place only while a clock
is open.
"""
from __future__ import annotations

import builtins
import importlib
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator


@dataclass(eq=False)  # each open clock is its own
class Clock:
    seconds: float = 0.0


_state = threading.local()  # per thread: the open clocks, and how deep in an import it is
_hooks: dict = {"open": 0}
_guard = threading.Lock()


def _timed(real):
    def timed(*args, **kwargs):
        clocks = getattr(_state, "clocks", None)
        if not clocks or _state.depth:
            return real(*args, **kwargs)
        _state.depth = 1
        started = time.perf_counter()
        try:
            return real(*args, **kwargs)
        finally:
            _state.depth = 0
            spent = time.perf_counter() - started
            for clock in clocks:
                clock.seconds += spent
    timed.real = real
    return timed


def _hook() -> None:
    with _guard:
        if not _hooks["open"]:
            builtins.__import__ = _hooks["import"] = _timed(builtins.__import__)
            importlib.import_module = _hooks["import_module"] = _timed(importlib.import_module)
        _hooks["open"] += 1


def _unhook() -> None:
    with _guard:
        _hooks["open"] -= 1
        if _hooks["open"]:
            return
        # put back what was there, unless something hooked on top of ours since (then ours stays, passing through)
        if builtins.__import__ is _hooks["import"]:
            builtins.__import__ = _hooks["import"].real
        if importlib.import_module is _hooks["import_module"]:
            importlib.import_module = _hooks["import_module"].real


@contextmanager
def clock() -> Iterator[Clock]:
    """A Clock whose `seconds` grow by the imports this thread makes inside the block."""
    out = Clock()
    if not hasattr(_state, "clocks"):
        _state.clocks, _state.depth = [], 0
    _hook()
    _state.clocks.append(out)
    try:
        yield out
    finally:
        _state.clocks.remove(out)
        _unhook()

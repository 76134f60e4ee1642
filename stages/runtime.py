"""The runtime protocol: a backend opens what it built, and the shared stages (stages/benchmark.py, validate.py,
profile.py) measure it, so that measurement is written once for every backend.

A backend's plugin module (its package's `__init__.py`) provides

    open_runtime(inputs: dict[str, Path], options: dict, work_dir: Path) -> Runtime

`inputs` are the DAG inputs of the measuring node (the build's artifact and the fp32 export: the backend's YAML
says which under `artifact:`), `options` its `backend.<key>` values, `work_dir` a scratch directory of the job's.
A Runtime is the build, opened (Polygraphy's runner idea: one object serves timing and the comparator):
- `specs(feeds)`: the inputs it takes, every axis sized by the run;
- `infer(feeds) -> outputs`: one inference on numpy arrays by input name, outputs by name (the accuracy runner;
  `on_gpu` says whether it runs inside the GPU session);
- `reference()`: the fp32 reference runner its outputs are compared with, and `reference_label`, what that is;
- `device`: "cpu" (timed by the host loop: `call(feeds)` returns the call to time, its feeds already placed) or
  "cuda" (timed by the GPU harness: `lanes(specs, sizes, seed, streams)` returns one harness Workload per
  inference stream, `timing()` the context the timed loop runs in, `hooks()` extra harness hooks, and
  `cuda_graph(requested, lanes)` whether a CUDA graph may be captured (and why not), decided up front, and
  `measured(lanes)` the keyword arguments of stages.gpu.measured.stage_result: its cost rows and info);
- `profile(feeds, iterations, settings, out_dir) -> (layers rows, info)`: optional per-layer profiling;
- `close()`.
A plugin may also provide `measure_isolated(options) -> bool`: the measuring stages then run each in a child process
(crash_prone below), so that a crash, a poisoned GPU context or an out-of-memory kill is that point's failed row.
The base class below gives the defaults; a backend overrides what it can do, and what it cannot is `Unsupported`
with the reason.
"""
from __future__ import annotations

import contextlib
import importlib
from pathlib import Path
from typing import Any, Callable

from stages.api import Param, Unsupported


class Runtime:
    device = "cpu"
    on_gpu = False
    reference_label = "fp32 export on onnxruntime CPU"  # the ONNX backends' reference (stages/onnxruntime/session)

    def specs(self, feeds: dict) -> list:
        raise NotImplementedError

    def infer(self, feeds: dict) -> dict:
        raise NotImplementedError

    def reference(self):
        raise NotImplementedError

    def call(self, feeds: dict) -> Callable[[], Any]:
        raise Unsupported(f"{type(self).__name__} cannot be timed on the host")

    def lanes(self, specs: list, sizes: dict, seed: int, streams: int) -> list:
        raise Unsupported(f"{type(self).__name__} cannot be timed on a GPU")

    def timing(self):
        return contextlib.nullcontext()

    def cuda_graph(self, requested: bool, lanes: list) -> tuple[bool, str]:
        """Whether the harness may capture these lanes in a CUDA graph, decided before any capture, and why (not)."""
        return requested, "benchmark.cuda_graph=true" if requested else "benchmark.cuda_graph=false"

    def hooks(self) -> tuple:
        return ()

    def measured(self, lanes: list) -> dict:
        return {}

    def cpu_rows(self, median_ms: float) -> list[dict]:
        return []

    def info(self) -> dict:
        """What it learned while running, for the runs row (e.g. the TensorRT version trtexec reports)."""
        return {}

    def profile(self, feeds: dict, iterations: int, settings: dict, out_dir: Path) -> tuple[list[dict], dict]:
        raise Unsupported(f"{type(self).__name__} has no per-layer profiler")

    def close(self) -> None:
        pass


# What the runner hands every measuring stage (RUNTIME = True; pipeline/run/runner.py), beside its own params: the
# backend's plugin and options to open the build with, and the feeds and seed that size and fill its inputs.
STAGE_PARAMS = {"plugin": Param(str, keyed=False), "options": Param(dict, keyed=False), "feeds": Param(dict),
                "seed": Param(int)}


def crash_prone(params: dict) -> bool:
    """Whether a measuring stage (its params: `plugin`, `options`) runs in a child process (pipeline/run/isolation.py,
    unless isolation.mode=none): where the backend's plugin says so, `measure_isolated(options) -> bool`."""
    decide = getattr(importlib.import_module(params["plugin"]), "measure_isolated", None)
    return bool(decide and decide(params["options"]))


def open_build(plugin: str, inputs: dict[str, Path], options: dict, work_dir: Path) -> Runtime:
    """The backend `plugin` names, asked to open its build."""
    module = importlib.import_module(plugin)
    opener = getattr(module, "open_runtime", None)
    if opener is None:
        raise Unsupported(f"backend plugin {plugin} has no open_runtime(inputs, options, work_dir): it cannot be "
                          f"measured by the shared stages (stages/runtime.py)")
    return opener(inputs, options, work_dir)

"""The profile stage of every backend that has a per-layer profiler: after (never inside) the timed benchmark, the
build opened by its backend (stages/runtime.py) reports where the time goes, into the `layers` table."""
from __future__ import annotations

from pathlib import Path

from stages import runtime
from stages.api import Param, StageResult

VERSION = "1"
OUTPUTS = ()
CACHED = False
RUNTIME = True  # the runner hands it the backend's plugin and options (pipeline/run/runner.py)
crash_prone = runtime.crash_prone  # in a child process where the backend says so
PARAMS = {**runtime.STAGE_PARAMS, "iterations": Param(int, min=1), "cuda_graph": Param(bool)}


def run(inputs: dict, params: dict, out_dir: Path) -> StageResult:
    rt = runtime.open_build(params["plugin"], inputs, params["options"], out_dir)
    try:
        rows, info = rt.profile(params["feeds"], params["iterations"],
                                {"seed": params["seed"], "cuda_graph": params["cuda_graph"]}, out_dir)
    finally:
        rt.close()
    return StageResult(info=info, tables={"layers": rows})

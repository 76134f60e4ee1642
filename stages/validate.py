"""The validate stage of every backend: the build, opened by its backend (stages/runtime.py), against its fp32
reference on the same batches (validate.data, else seeded ones), through the one accuracy path
(stages/accuracy.py): the `accuracy` rows, and per sample of the judged output the `predictions` columns."""
from __future__ import annotations

from pathlib import Path

from stages import accuracy, datasets, runtime
from stages.api import Param, StageResult

VERSION = "1"
OUTPUTS = ()
CACHED = False
RUNTIME = True  # the runner hands it the backend's plugin and options (pipeline/run/runner.py)
crash_prone = runtime.crash_prone  # in a child process where the backend says so
PARAMS = {**runtime.STAGE_PARAMS, "validation": Param(dict)}


def run(inputs: dict, params: dict, out_dir: Path) -> StageResult:
    rt = runtime.open_build(params["plugin"], inputs, params["options"], out_dir)
    try:
        batches = datasets.validation(rt.specs(params["feeds"]), params["feeds"], params["validation"],
                                      params["seed"])
        rows, info, predictions = accuracy.evaluate(rt, rt.reference(), batches, rt.reference_label,
                                                    params["validation"].get("metric"))
        info.update(rt.info())
    finally:
        rt.close()
    return StageResult(info=info, tables={"accuracy": rows, "predictions": predictions})

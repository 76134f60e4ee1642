"""A cached stage for orchestrator tests whose module takes FAKE_MODULE_IMPORT_S (env) to import and which, on first
use, imports a library that takes FAKE_LIBRARY_IMPORT_S (tests/fake_heavy_library.py), as export imports torch; its
work takes FAKE_WORK_S. The build-time column must count only the work."""
import os
import time

from stages.api import Param, StageResult

time.sleep(float(os.environ.get("FAKE_MODULE_IMPORT_S", 0)))

VERSION = "1"
CACHED = True
OUTPUTS = ("data",)
PARAMS = {"text": Param(str)}


def run(inputs, params, out_dir):
    import tests.fake_heavy_library  # noqa: F401 - imported on first use, as a stage imports torch

    time.sleep(float(os.environ.get("FAKE_WORK_S", 0)))
    (out_dir / "data.txt").write_text(params["text"])
    return StageResult(outputs={"data": "data.txt"})

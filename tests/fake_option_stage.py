"""A cached build stage for orchestrator tests that takes its backend's options from the runner (BACKEND_OPTIONS)."""
from stages.api import Param, StageResult

VERSION = "1"
CACHED = True
OUTPUTS = ("data",)
PARAMS = {"text": Param(str), "counter": Param(str)}
BACKEND_OPTIONS = ("level", "tool")


def run(inputs, params, out_dir):
    with open(params["counter"], "a") as f:
        f.write("built\n")
    (out_dir / "data.txt").write_text(f"{params['text']}{params['level']}")
    return StageResult(outputs={"data": "data.txt"}, info={"level": params["level"]})

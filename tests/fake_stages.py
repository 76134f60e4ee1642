"""Tiny stages for orchestrator tests: they follow stages/api.py but need no model or framework."""

import os
import signal
import time

from stages.api import Param, StageResult, Unsupported

VERSION = "1"
CACHED = True
OUTPUTS = ("data",)
PARAMS = {"text": Param(str), "counter": Param(str), "fail": Param(str, optional=True)}


def environment(params):
    return {}


def run(inputs, params, out_dir):
    if params.get("fail") == "unsupported":
        raise Unsupported("this combination cannot run here")
    if params.get("fail") == "crash":
        raise RuntimeError("boom\nsecond line")
    if params.get("fail") == "segfault":
        (out_dir / "data.txt").write_text("half")  # a partial artifact that must never be read back
        os.kill(os.getpid(), signal.SIGSEGV)
    if params.get("fail") == "hang":
        time.sleep(60)
    with open(params["counter"], "a") as f:
        f.write("built\n")
    upstream = inputs["data"].read_text() if "data" in inputs else ""
    (out_dir / "data.txt").write_text(upstream + params["text"])
    return StageResult(outputs={"data": "data.txt"}, info={"chars": len(upstream) + len(params["text"])})

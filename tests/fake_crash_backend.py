"""A backend plugin for the isolation of measuring stages: its runtime kills its own process on demand, as a segfault
in a GPU library, a poisoned CUDA context's abort or an out-of-memory kill would, and records which process opened it.
Its build is tests.fake_stages (a text file); the shared benchmark stage measures it on the host."""
import os
import signal
from pathlib import Path

from stages import runtime
from stages.api import Param
from stages.availability import Requires

FAULTS = ("none", "segfault", "exit")
OPTIONS = {"fault": Param(str, choices=FAULTS, doc="how opening the build ends the process"),
           "isolate": Param(bool, keyed=False, doc="whether its measuring stages run in a child process")}
REQUIRES = Requires()
HOW_TO_GET = "nothing to get: it is a test's."


def measure_isolated(options: dict) -> bool:
    return options["isolate"]


class Crashing(runtime.Runtime):
    def __init__(self, fault: str, work_dir: Path):
        (Path(work_dir) / "opened_by.pid").write_text(str(os.getpid()))
        if fault == "segfault":
            os.kill(os.getpid(), signal.SIGSEGV)
        if fault == "exit":
            os._exit(3)

    def specs(self, feeds: dict) -> list:
        return []

    def call(self, feeds: dict):
        return lambda: None


def open_runtime(inputs: dict, options: dict, work_dir: Path) -> Crashing:
    return Crashing(options["fault"], work_dir)


def segfault_build(inputs, params, out_dir, device, recipe):
    """Stands in for the torch build's step in its child (stages/torch_backend/build.py _build_scoped): dies as a
    segfault inside a compiler library would."""
    os.kill(os.getpid(), signal.SIGSEGV)


def fine_build(inputs, params, out_dir, device, recipe):
    """The same step, returning as a build that needed no package would: what the child hands back."""
    from stages.torch_backend import build

    return build._publish(Path(out_dir), {"path": "compile", "reason": f"built in process {os.getpid()}"})

"""Run one stage in a child process, so a segfault, an OOM kill or a hang becomes an ordinary error.

An engine build that crashes inside a builder library takes its process with it; under a joblib launcher it would
take the whole batch of jobs too. In a child, the crash is just a non-zero exit: the parent raises
StageCrashed with the signal's name, the job records a `failed` row, and the sweep goes on. A stage can be isolated
when it hands its results over as files plus a small picklable StageResult, and reads only files: artifact stages,
and measuring stages that open the build from its files (a GPU measurement whose CUDA context a bad point poisoned,
or that ran out of memory, takes only its child with it; the parent never touched the GPU for it).
"""
from __future__ import annotations

import multiprocessing as mp
import signal
import traceback
from pathlib import Path


class StageCrashed(RuntimeError):
    """The child died (signal or exit) or outlived its time limit."""


def _child(conn, module_name: str, inputs: dict, params: dict, out_dir: str, shared_root, clocked: bool) -> None:
    import contextlib
    import importlib

    from pipeline.run import imports
    from stages import api

    api.set_shared_root(shared_root)
    try:  # the child imports the stage and its libraries afresh
        with imports.clock() if clocked else contextlib.nullcontext(imports.Clock()) as imported:
            result = importlib.import_module(module_name).run(inputs, params, Path(out_dir))
        conn.send(("ok", (result, imported.seconds)))
    except BaseException as err:  # noqa: BLE001 - everything goes back to the parent
        try:
            conn.send(("error", err))
        except Exception:  # an exception that does not pickle: send its text
            conn.send(("text", "".join(traceback.format_exception(err))))
    finally:
        conn.close()


def run_isolated(module_name: str, inputs: dict, params: dict, out_dir: Path, timeout_s: float | None,
                 shared_root: Path | None = None, imported: list[float] | None = None):
    """module.run(inputs, params, out_dir) in a fresh ("spawn") process; its StageResult, or its exception.
    `imported[0]`, where given, is set to the seconds the child spent importing the stage and its libraries (not
    given, no import is timed: pipeline/run/imports.py's hook would weigh on a measurement's timed loop)."""
    ctx = mp.get_context("spawn")  # never fork a process that may hold a CUDA context
    parent, child = ctx.Pipe(duplex=False)
    args = (child, module_name, inputs, params, str(out_dir), shared_root, imported is not None)
    proc = ctx.Process(target=_child, args=args, daemon=True)
    proc.start()
    child.close()
    try:
        if not parent.poll(timeout_s):
            proc.kill()
            proc.join()
            raise StageCrashed(f"timed out after {timeout_s:g} s (isolation.timeout_s) and was killed")
        kind, payload = parent.recv()
    except EOFError:  # the child died without a word: a signal or os._exit
        proc.join()
        raise StageCrashed(_describe_exit(proc.exitcode)) from None
    finally:
        parent.close()
    proc.join()
    if kind == "ok":
        result, seconds = payload
        if imported is not None:
            imported[0] = seconds
        return result
    if kind == "error":
        raise payload
    raise StageCrashed(f"raised an exception that could not be sent back:\n{payload}")


def _describe_exit(code: int | None) -> str:
    if code is not None and code < 0:
        name = signal.Signals(-code).name
        hint = " (killed: out of memory, or by hand)" if name == "SIGKILL" else ""
        return f"crashed with signal {name} ({-code}){hint}"
    return f"exited with status {code} before reporting a result"

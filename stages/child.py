"""Call a function in a fresh ("spawn") child process: its return value, its exception, or `Crashed` naming the
signal or exit status that ended the child without a word.

The runner isolates whole stages on it (pipeline/run/isolation.py); a stage uses it for one step that can take its
process down (the torch build's AOTInductor compile on CUDA), so that the crash becomes the step's reason instead of
the end of the sweep.
"""
from __future__ import annotations

import multiprocessing as mp
import signal
import traceback
from typing import Callable


class Crashed(RuntimeError):
    """The child died (a signal or an exit) before reporting, or outlived its time and was killed."""


class TimedOut(Crashed):
    """The child outlived its time and was killed."""


def call(fn: Callable, args: tuple = (), timeout_s: float | None = None):
    """`fn(*args)` in a spawned child (never fork a process that may hold a CUDA context): `fn` a module-level
    function, the arguments and the result picklable. An exception the child raises is raised here."""
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    # not daemonic: a daemonic child may not start children of its own (a stage isolated by the runner that isolates
    # a step); every path below joins or kills it
    proc = ctx.Process(target=_main, args=(child, fn, args))
    proc.start()
    child.close()
    try:
        if not parent.poll(timeout_s):
            proc.kill()
            proc.join()
            raise TimedOut(f"timed out after {timeout_s:g} s and was killed")
        kind, payload = parent.recv()
    except EOFError:  # the child died without a word: a signal or os._exit
        proc.join()
        raise Crashed(_describe_exit(proc.exitcode)) from None
    finally:
        parent.close()
    proc.join()
    if kind == "ok":
        return payload
    if kind == "error":
        raise payload
    raise Crashed(f"raised an exception that could not be sent back:\n{payload}")


def _main(conn, fn: Callable, args: tuple) -> None:
    try:
        conn.send(("ok", fn(*args)))
    except BaseException as err:  # noqa: BLE001 - everything goes back to the parent
        try:
            conn.send(("error", err))
        except Exception:  # an exception that does not pickle: send its text
            conn.send(("text", "".join(traceback.format_exception(err))))
    finally:
        conn.close()


def _describe_exit(code: int | None) -> str:
    if code is not None and code < 0:
        name = signal.Signals(-code).name
        hint = " (killed: out of memory, or by hand)" if name == "SIGKILL" else ""
        return f"crashed with signal {name} ({-code}){hint}"
    return f"exited with status {code} before reporting a result"

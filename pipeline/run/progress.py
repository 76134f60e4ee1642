"""What a user watches while a run or a sweep goes on: job k of N, the current stage, each stage's cache
outcome and time, and a measurement's elapsed time against its target.

On a terminal this is a live `rich` display; anywhere else (CI, a cluster's log file, a pipe) the same
events become plain, throttled lines, so a log shows where a long job is without drowning in redraws.
Both speak one small interface (`Progress`); `create()` picks one. The orchestrator calls the hooks:

    job_started(k, n, label)        k counts from 1; n is None when the sweep's size is unknown
    stage_started(node, stage)      before a DAG node runs
    measuring(fraction, elapsed_s, target_s)   from inside a measurement, throttled by the caller
    stage_finished(node, cache, seconds)       cache: hit | miss | off
    job_finished(status, error)     ok | failed | unsupported
    close()

A multirun runs its jobs in one process, so the display lives at module level: `begin(Sweep.from_hydra(...))`
when the multirun starts, `start_job(job.num, overrides.task)` and `current()` inside each job, `end()` last.
Under a launcher that runs jobs in other processes (joblib, submitit, Ray) several jobs share the console: the
sweep's process shows plain lines only, and each worker process begins plain lines of its own
(`began_here()`, `Sweep.from_points`), every line prefixed by its job, `[job 2/6 precision=int8] ...`.
"""
from __future__ import annotations

import logging
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

# Plain mode writes a measuring line at each quarter of the target, and at least this often.
PLAIN_MEASURE_EVERY_S = 10.0


class Progress:
    """The hooks, doing nothing: what a caller gets when progress is off."""

    def job_started(self, k: int, n: int | None, label: str) -> None: ...
    def stage_started(self, node: str, stage: str) -> None: ...
    def measuring(self, fraction: float, elapsed_s: float | None = None, target_s: float | None = None) -> None: ...
    def stage_finished(self, node: str, cache: str, seconds: float) -> None: ...
    def job_finished(self, status: str, error: str | None = None) -> None: ...
    def close(self) -> None: ...


def create(stream: TextIO | None = None, *, enabled: bool = True, plain: bool = False) -> Progress:
    """A live display when `stream` (default stdout) is a terminal, plain lines when it is not (or `plain`)."""
    stream = stream if stream is not None else sys.stdout
    if not enabled:
        return Progress()
    if not plain and _is_terminal(stream):
        return RichProgress(stream)
    return PlainProgress(stream)


def _is_terminal(stream: TextIO) -> bool:
    if os.environ.get("TERM") == "dumb" or os.environ.get("CI"):
        return False
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # closed or not a real file
        return False


def _job(k: int, n: int | None) -> str:
    return f"job {k}/{n}" if n else f"job {k}"


def _measure_text(fraction: float, elapsed_s: float | None, target_s: float | None) -> str:
    timing = ""
    if elapsed_s is not None and target_s:  # past the duration, a measurement waits for its minimum iterations
        timing = (f" ({elapsed_s:.1f}/{target_s:.1f} s)" if elapsed_s < target_s or fraction >= 1 else
                  f" ({elapsed_s:.1f} s, past the {target_s:.1f} s minimum: until benchmark.min_iterations)")
    return f"measuring {min(max(fraction, 0.0), 1.0):.0%}{timing}"


class PlainProgress(Progress):
    """One line per event, for logs: `[job 2/6 int8] build miss 0.03s`."""

    def __init__(self, stream: TextIO, clock=time.monotonic):
        self.stream, self.clock = stream, clock
        self.prefix, self.node = "", ""
        self._next_quarter, self._last_line = 1, 0.0

    def _line(self, text: str) -> None:
        self.stream.write(f"{self.prefix}{text}\n")
        self.stream.flush()

    def job_started(self, k, n, label):
        self.prefix = f"[{_job(k, n)}{' ' + label if label else ''}] "
        self._line("started")

    def stage_started(self, node, stage):
        self.node, self._next_quarter, self._last_line = node, 1, self.clock()
        self._line(f"{node} ({stage}) ...")

    def measuring(self, fraction, elapsed_s=None, target_s=None):
        now = self.clock()
        quarter = math.floor(min(max(fraction, 0.0), 1.0) * 4)
        if quarter >= self._next_quarter or now - self._last_line >= PLAIN_MEASURE_EVERY_S:
            self._next_quarter, self._last_line = max(quarter + 1, self._next_quarter), now
            self._line(f"{self.node} {_measure_text(fraction, elapsed_s, target_s)}")

    def stage_finished(self, node, cache, seconds):
        self._line(f"{node} {cache} {seconds:.2f}s")

    def job_finished(self, status, error=None):
        self._line(status + (f": {error}" if error else ""))


class RichProgress(Progress):
    """A live display: a bar for the sweep, one for the current stage (a measurement fills it against its
    target), and a line kept above them for each finished stage and job."""

    def __init__(self, stream: TextIO, console=None):
        from rich.console import Console
        from rich.progress import BarColumn, SpinnerColumn, TextColumn, TimeElapsedColumn
        from rich.progress import Progress as Bars

        self.console = console or Console(file=stream)
        # markup off: labels and errors hold brackets ("model.input_shape=[3,224,224]", "[SomeLibraryError]")
        self.bars = Bars(SpinnerColumn(), TextColumn("{task.description}", markup=False), BarColumn(),
                         TextColumn("{task.fields[detail]}", markup=False), TimeElapsedColumn(),
                         console=self.console, transient=True)
        self.sweep = self.bars.add_task("", total=None, detail="", visible=False)
        self.stage = self.bars.add_task("", total=None, detail="", visible=False)
        self._rerouted: list[tuple[logging.StreamHandler, TextIO]] = []
        self.bars.start()
        self._reroute_logging()

    def _reroute_logging(self) -> None:
        """Log handlers that hold the real stdout/stderr would write through the live display and tear it;
        point them at the display's proxies (rich prints those lines above the bars) until close()."""
        proxies = {id(sys.__stdout__): sys.stdout, id(sys.__stderr__): sys.stderr}
        for logger in [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]:
            for handler in getattr(logger, "handlers", []):
                if type(handler) is logging.StreamHandler and id(handler.stream) in proxies:
                    self._rerouted.append((handler, handler.stream))
                    handler.setStream(proxies[id(handler.stream)])

    def job_started(self, k, n, label):
        self.bars.update(self.sweep, description=f"{_job(k, n)}", detail=label, total=n, completed=k - 1,
                         visible=True)

    def stage_started(self, node, stage):
        self.bars.reset(self.stage, description=f"  {node}", detail=stage, total=None, visible=True)

    def measuring(self, fraction, elapsed_s=None, target_s=None):
        self.bars.update(self.stage, total=1.0, completed=min(max(fraction, 0.0), 1.0),
                         detail=_measure_text(fraction, elapsed_s, target_s))

    def stage_finished(self, node, cache, seconds):
        self.bars.update(self.stage, visible=False)
        self.bars.refresh()  # the line below goes above the bars as last drawn: not the finished stage's bar
        self.console.print(f"  {escape(node):<10} {_styled_cache(cache)} {seconds:6.2f}s", highlight=False)

    def job_finished(self, status, error=None):
        task = self.bars.tasks[self.sweep]
        self.bars.update(self.sweep, advance=1)
        self.bars.refresh()
        colour = {"ok": "green", "failed": "red", "unsupported": "yellow"}.get(status, "white")
        text = f"[{colour}]{escape(status)}[/]" + (f": {escape(error)}" if error else "")
        self.console.print(f"{escape(task.description)} {escape(task.fields.get('detail', ''))}: {text}",
                           highlight=False)

    def close(self):
        for handler, stream in self._rerouted:
            handler.setStream(stream)
        self._rerouted.clear()
        self.bars.stop()


def _styled_cache(cache: str) -> str:
    return {"hit": "[green]hit [/]", "miss": "[yellow]miss[/]"}.get(cache, f"[dim]{escape(cache):<4}[/]")


def escape(text: str) -> str:
    from rich.markup import escape as rich_escape

    return rich_escape(str(text))


# --------------------------------------------------------------------------- one display per process


@dataclass(frozen=True)
class Sweep:
    """What is known of a multirun before its first job: how many jobs, and which keys it sweeps."""

    jobs: int | None = 1          # None: cannot be counted up front (glob, interval sweeps)
    keys: tuple[str, ...] = ()

    @classmethod
    def from_hydra(cls, hydra_cfg) -> Sweep:
        """From `config.hydra` in a Callback's on_multirun_start (inside a job, `hydra.overrides.task` holds that
        job's values only): the sweeper's params (e.g. from `+sweep=precision`), overridden key by key by the
        command line, as the basic sweeper merges them."""
        params = dict(hydra_cfg.get("sweeper", {}).get("params", None) or {})
        command_line = list(hydra_cfg.get("overrides", {}).get("task", None) or [])
        given = {_key(o) for o in command_line}
        merged = [f"{k}={v}" for k, v in params.items() if k not in given] + command_line
        try:
            sizes = _sweep_sizes(merged)
        except Exception:  # noqa: BLE001 - Hydra itself reports a malformed override; here it only costs the count
            return cls(None, ())
        return cls(_product(sizes), tuple(sizes))

    @classmethod
    def from_points(cls, sweep_dir) -> Sweep:
        """In a launcher's worker process, which sees only its own job's overrides: the grid the sweeper wrote
        (`<sweep dir>/points.json`), its swept keys those whose values differ between points."""
        import json

        from pipeline import results

        try:
            points = json.loads((Path(sweep_dir) / results.POINTS_FILE).read_text())["points"]
            values: dict[str, set[str]] = {}
            for point in points:
                for override in point:
                    values.setdefault(_key(override), set()).add(override)
        except (OSError, ValueError, KeyError, TypeError):  # a search sweeper writes none: job k, no count
            return cls(None, ())
        return cls(len(points) or None, tuple(k for k, v in values.items() if len(v) > 1))

    def label(self, task_overrides) -> str:
        """A job's swept values, e.g. 'precision=int8 batch_size=8' (its other overrides are the same for all)."""
        return " ".join(o for o in task_overrides if _key(o) in self.keys)


def _key(override: str) -> str:
    return override.lstrip("+~").partition("=")[0]


_active: Progress = Progress()
_sweep = Sweep()
_began_in: int | None = None  # the process that began the display


def begin(sweep: Sweep | None = None, *, stream: TextIO | None = None, enabled: bool = True,
          plain: bool = False) -> Progress:
    """Start this process's display (a multirun runs its jobs in one process: one display for all)."""
    global _active, _sweep, _began_in
    end()
    _active, _sweep = create(stream, enabled=enabled, plain=plain), sweep or Sweep()
    _began_in = os.getpid()
    return _active


def began_here() -> bool:
    """Whether this process began a display: not so in a launcher's worker process (joblib, submitit, Ray)."""
    return _began_in == os.getpid()


def current() -> Progress:
    """The display begin() started, or one that does nothing."""
    return _active


def start_job(num: int, task_overrides) -> None:
    """From inside a Hydra job: its `job.num` (0-based) and `overrides.task`."""
    _active.job_started(num + 1, _sweep.jobs, _sweep.label(task_overrides))


def end() -> None:
    global _active
    _active.close()
    _active = Progress()


# --------------------------------------------------------------------------- the size of a Hydra sweep


def _sweep_sizes(overrides: list[str]) -> dict[str, int | None]:
    """Swept key -> number of values (None where Hydra cannot enumerate it without the config repository)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    sizes: dict[str, int | None] = {}
    for override in OverridesParser.create().parse_overrides(overrides):
        if override.is_sweep_override():
            try:
                sizes[override.key_or_group] = len(list(override.sweep_string_iterator()))
            except Exception:  # noqa: BLE001 - glob and interval sweeps: HydraException
                sizes[override.key_or_group] = None
    return sizes


def _product(sizes: dict[str, int | None]) -> int | None:
    return None if None in sizes.values() else math.prod(sizes.values())

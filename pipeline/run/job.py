"""One job: a resolved config in, the DAG run through the cache, one `runs` row and its tables out.

Every job leaves a `runs` row, whatever happens: ok, unsupported (with the reason) or failed (with the error).
Hydra is not needed here: the CLI and reproduce both call run_job with a plain resolved config.
"""
from __future__ import annotations

import datetime as dt
import logging
import time
import traceback
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pipeline import results
from pipeline.config import environment, schema
from pipeline.run import plugins, progress, runner, spec
from pipeline.run.cache import Cache, CacheError
from pipeline.run.spec import JobSpec
from stages import api
from stages.api import StageInputError, Unsupported
from stages.gpu import pinning

log = logging.getLogger(__name__)

CONFIG_FILE = results.JOB_CONFIG
ERROR_FILE = "error.txt"  # beside the tables: the traceback of an unexpected error
NEVER_CHANGES_RESULT = spec.NEVER_CHANGES_RESULT  # what config_hash leaves out (pipeline/run/spec.py)


@dataclass
class JobMeta:
    sweep: str | None = None
    job: int | None = None
    overrides: list[str] = field(default_factory=list)
    run_id: str = ""
    identity: str | None = None  # the config_hash to record, where not this config's own (a reproduced record's)

    def __post_init__(self):
        if not self.run_id:
            stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
            job = self.job if self.job is not None else 0
            self.run_id = f"{stamp}-{self.sweep or 'run'}-{job}-{uuid.uuid4().hex[:6]}"


class Interrupted(BaseException):
    """SIGTERM (a cluster's time limit, `kill`): like Ctrl-C, the job still records its row, then stops."""


# Where a stop request (SIGTERM) may raise Interrupted: only while a job's stages run, where run_job catches it
# and records the row. Anywhere else (Hydra composing the next point, a job writing its tables, the end-of-sweep
# summary) the request is only noted: the job in hand finishes writing, and the points after it are not run.
_STOP: dict[str, Any] = {"why": None, "stages": False}


def request_stop(why: str) -> None:
    """A signal handler's work: note `why`; raise Interrupted only if a job's stages are running."""
    _STOP["why"] = _STOP["why"] or why
    if _STOP["stages"]:
        raise Interrupted(why)


def stop_requested() -> str | None:
    return _STOP["why"]


@contextmanager
def _stages_interruptible():
    if _STOP["why"]:  # requested between the caller's check and here: this job does not start its stages
        raise Interrupted(_STOP["why"])
    _STOP["stages"] = True
    try:
        yield
    finally:
        _STOP["stages"] = False


@dataclass
class JobOutcome:
    run_id: str
    status: str                     # ok | failed | unsupported
    error: str | None
    row: dict[str, Any]
    tables: dict[str, Any]


config_hash = spec.identity_hash  # what decides a job's results (pipeline/run/spec.py)


def previous_ok(job_dir: Path, config: dict) -> JobOutcome | None:
    """For resume: the job's earlier outcome if it was ok with this very config, else None."""
    if not (Path(job_dir) / "tables" / "runs.parquet").is_file():
        return None
    why = results.verify_tables(job_dir, digests=True)  # a table deleted or changed by hand since it was written
    if why is not None:
        log.warning("resume: job %s is rerun: %s", job_dir, why)
        return None
    runs = results.load(job_dir, tables=("runs",)).runs
    if len(runs) != 1 or runs["status"].iloc[0] != "ok" or runs["config_hash"].iloc[0] != config_hash(config):
        return None
    row = runs.iloc[0].to_dict()
    return JobOutcome(row["run_id"], "ok", None, row, {})


def run_job(config: dict, job_dir: Path, meta: JobMeta) -> JobOutcome:
    """Run one job and record its row. Never raises (but for Ctrl-C and SIGTERM, once their row is recorded): an
    exception that escapes the job's own handling (a bug outside any stage) still becomes a `failed` row with its
    message, and its traceback in the job's error.txt."""
    try:
        return _run_job(config, job_dir, meta)
    except Exception as err:  # noqa: BLE001 - whatever it is, the job's row must say it
        return record_crash(Path(job_dir), meta, config, err)


def record_crash(job_dir: Path, meta: JobMeta, config: dict, err: Exception) -> JobOutcome:
    """A `failed` row for an exception that escaped run_job: `<Type>: <message> (traceback: error.txt)`."""
    error = f"{type(err).__name__}: {_first_line(err)}{_write_traceback(job_dir, err)}"
    log.error("job %s: %s", meta.job if meta.job is not None else meta.run_id, error)
    try:
        row = _base_row(config, meta, dt.datetime.now(dt.timezone.utc))
    except Exception:  # noqa: BLE001 - the same bug may be in building the row: the bare minimum then
        row = {"run_id": meta.run_id, "sweep": meta.sweep, "job": meta.job, "status": "failed", "error": None,
               "overrides": " ".join(meta.overrides), "started": dt.datetime.now(dt.timezone.utc).isoformat(
                   timespec="seconds")}
    try:
        return _finish(job_dir, meta, row, {}, "failed", error, time.perf_counter())
    except Exception as again:  # noqa: BLE001 - not even the row: the log line above is what is left
        log.error("job %s: cannot write its results to %s (%s: %s); it will show as lost", meta.run_id, job_dir,
                  type(again).__name__, again)
        return JobOutcome(meta.run_id, "failed", error, row, {})


def _run_job(config: dict, job_dir: Path, meta: JobMeta) -> JobOutcome:
    job_dir = Path(job_dir)
    started, clock = dt.datetime.now(dt.timezone.utc), time.perf_counter()
    pinned = _pin_gpu(config)  # first: the environment captured next already talks to the GPU
    identity = meta.identity or config_hash(config)
    row = _base_row(config, meta, started, identity)
    if pinned is not None:
        row.update(gpu_device=pinned.device, gpu_shared=pinned.shared)
    tables: dict[str, Any] = {}
    try:
        job_dir.mkdir(parents=True, exist_ok=True)
        results.set_aside(job_dir)  # a killed re-run must not leave the old ok tables for resume to keep
        (job_dir / CONFIG_FILE).write_text(row["config"])  # the row's own YAML of the config
    except OSError as err:
        return _finish(job_dir, meta, row, {}, "failed", f"cannot write the job directory: {os_reason(err)}", clock)
    status, error = "ok", None

    shown = progress.current()

    def record(outcome: runner.NodeOutcome) -> None:
        shown.stage_finished(outcome.name, outcome.cache, outcome.seconds)
        row[f"{outcome.name}_seconds"] = outcome.seconds  # the work; the imports on first use beside it
        row[f"{outcome.name}_import_seconds"] = outcome.import_seconds
        row[f"{outcome.name}_cache"] = outcome.cache
        row.update({f"{outcome.name}_{k}": v for k, v in outcome.info.items()})
        for table, rows in outcome.tables.items():
            tables[table] = _concat(tables.get(table), rows)

    try:
        with _stages_interruptible():
            schema.check(config)
            jobspec = JobSpec.from_config(config, identity)  # the config read once: each part gets its piece
            plugins.check(jobspec.backend)
            nodes = runner.plan(jobspec.dag, jobspec.backend)
            cache = _open_cache(jobspec.cache)
            isolate = runner.Isolation(jobspec.isolation.mode, jobspec.isolation.timeout_s)
            api.set_progress(shown.measuring)
            try:
                runner.run(nodes, cache=cache, work_dir=job_dir, isolate=isolate, on_done=record,
                           on_start=lambda node: shown.stage_started(node.name, node.stage))
            finally:
                api.set_progress(None)
    except schema.ConfigError as err:
        status, error = "failed", str(err)
    except Unsupported as err:
        status, error = "unsupported", str(err)
    except runner.StageFailed as failed:
        status, error = _classify(failed, job_dir)
    except (KeyboardInterrupt, Interrupted) as stop:  # recorded, then the caller stops
        why = "interrupted" + (f" ({stop})" if str(stop) else "")
        stop.outcome = _finish(job_dir, meta, row, tables, "failed", why, clock)
        raise
    return _finish(job_dir, meta, row, tables, status, error, clock)


def _finish(job_dir: Path, meta: JobMeta, row: dict, tables: dict, status: str, error: str | None,
            clock: float) -> JobOutcome:
    """Record the outcome. If the tables cannot be written (a full disk, an I/O error, a vanished directory),
    the runs row alone is tried, as failed and saying why; if even that fails, one line says so and the job
    shows as lost in the sweep's summary. Either way the sweep goes on."""
    row.update(status=status, error=error, job_seconds=time.perf_counter() - clock)
    try:
        write_row_and_tables(job_dir, meta.run_id, row, tables)
        return JobOutcome(meta.run_id, status, error, row, tables)
    except OSError as err:
        was = f"; the job itself was {status}" + (f": {error}" if error else "")
        row.update(status="failed", error=f"its tables could not be written ({os_reason(err)}){was}")
    try:
        write_row_and_tables(job_dir, meta.run_id, row, {})
    except OSError as err:
        log.error("job %s: cannot write its results to %s (%s); it will show as lost", meta.run_id, job_dir,
                  os_reason(err))
    return JobOutcome(meta.run_id, "failed", row["error"], row, {})


def os_reason(err: OSError) -> str:
    """'No space left on device: outputs/runs/x/tables' from an OSError."""
    where = f": {err.filename}" if err.filename else ""
    return f"{err.strerror or err}{where}"


def record_config_error(job_dir: Path, meta: JobMeta, raw_config: dict, err: Exception) -> JobOutcome:
    """A config that cannot even be resolved still leaves its `runs` row."""
    row = _base_row(raw_config, meta, dt.datetime.now(dt.timezone.utc))
    message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return _finish(Path(job_dir), meta, row, {}, "failed", f"config: {message}", time.perf_counter())


def record_not_run(job_dir: Path, meta: JobMeta, config: dict, why: str) -> JobOutcome:
    """A sweep point left over after the sweep was stopped: a row that says so, so resume knows to run it."""
    row = _base_row(config, meta, dt.datetime.now(dt.timezone.utc))
    return _finish(Path(job_dir), meta, row, {}, "failed",
                   f"not run: the sweep was stopped ({why}) before this point; rerun it with resume=true",
                   time.perf_counter())


def record_failed(job_dir: Path, meta: JobMeta, config: dict, error: str) -> JobOutcome:
    """A point that failed before (or without) running: its process died (`lost: ...`), or Hydra could not
    write its directory. A row that says so, so that the summary shows it and resume reruns it."""
    row = _base_row(config, meta, dt.datetime.now(dt.timezone.utc))
    return _finish(Path(job_dir), meta, row, {}, "failed", error, time.perf_counter())


def _pin_gpu(config: dict) -> pinning.Pin | None:
    """This process's own GPU where it sees several (stages/gpu/pinning.py); a bad gpu.pin fails in schema.check."""
    mode = spec.gpu_pin(config)
    return pinning.pin(mode) if mode in pinning.MODES else None


def _open_cache(settings: spec.CacheSettings) -> Cache:
    try:
        return Cache(Path(settings.dir), enabled=settings.enabled, verify=settings.verify)
    except OSError as err:
        raise schema.ConfigError(f"cache.dir = '{settings.dir}': not writable ({err.strerror or err}); "
                                 f"choose a writable directory") from err


def record_invalid_point(job_dir: Path, meta: JobMeta, message: str) -> JobOutcome:
    """A sweep point whose config cannot be composed at all: its row carries the overrides and Hydra's error."""
    given = dict(o.lstrip("+~").split("=", 1) for o in meta.overrides if "=" in o)
    raw = {group: {"name": given.get(group)} for group in ("model", "backend", "precision")}
    return record_config_error(job_dir, meta, raw, ValueError(message))


def _classify(failed: runner.StageFailed, job_dir: Path) -> tuple[str, str]:
    err = failed.error
    if isinstance(err, Unsupported):
        return "unsupported", f"{failed.node}: {err}"
    if isinstance(err, (StageInputError, schema.ConfigError, CacheError)):
        return "failed", f"{failed.node}: {err}"
    # An unexpected error: one line in the table, the whole traceback beside the tables.
    return "failed", f"{failed.node}: {type(err).__name__}: {_first_line(err)}{_write_traceback(job_dir, err)}"


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines()[0] if str(err).strip() else "")[:500]


def _write_traceback(job_dir: Path, err: BaseException) -> str:
    """The whole traceback into <job_dir>/error.txt; ' (traceback: error.txt)', or '' if it cannot be written."""
    trace = Path(job_dir) / ERROR_FILE
    try:
        trace.parent.mkdir(parents=True, exist_ok=True)
        trace.write_text("".join(traceback.format_exception(err)))
        return f" (traceback: {trace.name})"
    except OSError:  # the disk that failed the job may refuse this too: the one line is what matters
        return ""


def _base_row(config: dict, meta: JobMeta, started: dt.datetime, identity: str | None = None) -> dict[str, Any]:
    """The row's config part, from any config (one that failed to compose or to pass the checks included)."""
    names = spec.Identity.of(config)
    row: dict[str, Any] = {
        "run_id": meta.run_id, "sweep": meta.sweep, "job": meta.job, "status": "failed", "error": None,
        "backend": names.backend, "model": names.model,
        "precision": str(names.precision), "overrides": " ".join(meta.overrides),
        "config_hash": identity or meta.identity or config_hash(config),
        "config": yaml.safe_dump(config, sort_keys=False),
        "started": started.isoformat(timespec="seconds"),
    }
    row.update(spec.row_values(config, meta.overrides))
    row.update({f"env_{k}": v for k, v in environment.capture().items()})
    return row


def _concat(existing: Any, rows: Any) -> Any:
    if existing is None:
        return rows
    if isinstance(rows, dict):
        return {k: list(existing[k]) + list(v) for k, v in rows.items()}
    return list(existing) + list(rows)


def write_row_and_tables(job_dir: Path, run_id: str, row: dict, tables: dict[str, Any]) -> None:
    """A job's runs row and its stages' tables, each row tagged with run_id, written atomically."""
    out = {"runs": [row]}
    for name, rows in tables.items():
        if isinstance(rows, dict):  # columnar
            n = len(next(iter(rows.values()), []))
            out[name] = {"run_id": [run_id] * n, **rows}
        else:
            out[name] = [{"run_id": run_id, **r} for r in rows]
    results.write_tables(job_dir, out)

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pipeline import environment, progress, results, runner, schema
from pipeline.cache import Cache, digest
from stages import api, availability
from stages.api import StageInputError, Unsupported

log = logging.getLogger("pipeline")

CONFIG_FILE = "config.resolved.yaml"
# Keys that never change a result; left out of config_hash so a moved cache or a reproduction hashes the same.
_HASH_EXCLUDED = ("cache", "resume", "isolation")
# Config keys with a fixed column in `runs` (other overridden keys get a column named after their path).
COLUMNS = {
    "batch_size": "batch_size",
    "build.optimization_level": "optimization_level",
    "build.max_aux_streams": "max_aux_streams",
    "benchmark.warmup_ms": "warmup_ms",
    "benchmark.duration_s": "duration_s",
    "benchmark.min_iterations": "min_iterations",
    "cache.enabled": "cache_enabled",
    "seed": "seed",
}
_GROUPS = ("model", "backend", "precision", "sweep", "hydra")


@dataclass
class JobMeta:
    sweep: str | None = None
    job: int | None = None
    overrides: list[str] = field(default_factory=list)
    run_id: str = ""

    def __post_init__(self):
        if not self.run_id:
            stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
            self.run_id = f"{stamp}-{self.sweep or 'run'}-{self.job if self.job is not None else 0}-{uuid.uuid4().hex[:6]}"


class Interrupted(BaseException):
    """SIGTERM (a cluster's time limit, `kill`): like Ctrl-C, the job still records its row, then stops."""


@dataclass
class JobOutcome:
    run_id: str
    status: str                     # ok | failed | unsupported
    error: str | None
    row: dict[str, Any]
    tables: dict[str, Any]


def config_hash(config: dict) -> str:
    return digest({k: v for k, v in config.items() if k not in _HASH_EXCLUDED})


def previous_ok(job_dir: Path, config: dict) -> JobOutcome | None:
    """For resume: the job's earlier outcome if it was ok with this very config, else None."""
    if not (Path(job_dir) / "tables" / "runs.parquet").is_file():
        return None
    runs = results.load(job_dir, tables=("runs",)).runs
    if len(runs) != 1 or runs["status"].iloc[0] != "ok" or runs["config_hash"].iloc[0] != config_hash(config):
        return None
    row = runs.iloc[0].to_dict()
    return JobOutcome(row["run_id"], "ok", None, row, {})


def _set_aside(job_dir: Path) -> None:
    """A job re-run into its old directory: the old tables are kept beside, never silently overwritten."""
    old = job_dir / "tables"
    if old.is_dir():
        old.rename(job_dir / f"tables.replaced-{dt.datetime.now().strftime('%Y%m%d-%H%M%S-%f')}")


def run_job(config: dict, job_dir: Path, meta: JobMeta) -> JobOutcome:
    job_dir = Path(job_dir)
    job_dir.mkdir(parents=True, exist_ok=True)
    _set_aside(job_dir)
    (job_dir / CONFIG_FILE).write_text(yaml.safe_dump(config, sort_keys=False))
    started, clock = dt.datetime.now(dt.timezone.utc), time.perf_counter()
    row = _base_row(config, meta, started)
    tables: dict[str, Any] = {}
    status, error = "ok", None

    shown = progress.current()

    def record(outcome: runner.NodeOutcome) -> None:
        shown.stage_finished(outcome.name, outcome.cache, outcome.seconds)
        row[f"{outcome.name}_seconds"] = outcome.seconds
        row[f"{outcome.name}_cache"] = outcome.cache
        row.update({f"{outcome.name}_{k}": v for k, v in outcome.info.items()})
        for table, rows in outcome.tables.items():
            tables[table] = _concat(tables.get(table), rows)

    try:
        schema.check(config)
        _require_backend(config["backend"]["name"], config["trtexec"]["path"])
        nodes = runner.plan(config["backend"]["dag"])
        cache = _open_cache(config["cache"])
        isolate = runner.Isolation(config["isolation"]["mode"], config["isolation"]["timeout_s"])
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
    except (KeyboardInterrupt, Interrupted) as stop:
        why = "interrupted" + (f" ({stop})" if str(stop) else "")
        row.update(status="failed", error=why, job_seconds=time.perf_counter() - clock)
        write_row_and_tables(job_dir, meta.run_id, row, tables)
        raise
    row.update(status=status, error=error, job_seconds=time.perf_counter() - clock)
    write_row_and_tables(job_dir, meta.run_id, row, tables)
    return JobOutcome(meta.run_id, status, error, row, tables)


def _require_backend(name: str, trtexec: str) -> None:
    reason = availability.check(name, trtexec)
    if reason:
        raise Unsupported(f"backend={name} cannot run here: {reason}. {availability.how_to_get(name)}")


def record_config_error(job_dir: Path, meta: JobMeta, raw_config: dict, err: Exception) -> JobOutcome:
    """A config that cannot even be resolved still leaves its `runs` row."""
    job_dir = Path(job_dir)
    job_dir.mkdir(parents=True, exist_ok=True)
    row = _base_row(raw_config, meta, dt.datetime.now(dt.timezone.utc))
    message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    row.update(status="failed", error=f"config: {message}", job_seconds=0.0)
    write_row_and_tables(job_dir, meta.run_id, row, {})
    return JobOutcome(meta.run_id, "failed", row["error"], row, {})


def _open_cache(settings: dict) -> Cache:
    try:
        return Cache(Path(settings["dir"]), enabled=settings["enabled"])
    except OSError as err:
        raise schema.ConfigError(f"cache.dir = '{settings['dir']}': not writable ({err.strerror or err}); "
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
    if isinstance(err, (StageInputError, schema.ConfigError)):
        return "failed", f"{failed.node}: {err}"
    # An unexpected error: one line in the table, the whole traceback beside the tables.
    trace = job_dir / "error.txt"
    trace.write_text("".join(traceback.format_exception(err)))
    first = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return "failed", f"{failed.node}: {type(err).__name__}: {first[:500]} (traceback: {trace.name})"


def _base_row(config: dict, meta: JobMeta, started: dt.datetime) -> dict[str, Any]:
    row: dict[str, Any] = {
        "run_id": meta.run_id, "sweep": meta.sweep, "job": meta.job, "status": "failed", "error": None,
        "backend": schema.lookup(config, "backend.name"), "model": schema.lookup(config, "model.name"),
        "precision": str(schema.lookup(config, "precision.name")), "overrides": " ".join(meta.overrides),
        "config_hash": config_hash(config), "config": yaml.safe_dump(config, sort_keys=False),
        "started": started.isoformat(timespec="seconds"),
    }
    for key, column in COLUMNS.items():
        value = schema.lookup(config, key)
        if value is not None:  # absent, not None: a null here would give the column a second type
            row[column] = value
    for override in meta.overrides:
        key = override.lstrip("+~").partition("=")[0]
        if key.split(".")[0] in _GROUPS or key in COLUMNS:
            continue
        value = schema.lookup(config, key)
        if isinstance(value, (bool, int, float, str)):
            row.setdefault(key.replace(".", "_"), value)
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

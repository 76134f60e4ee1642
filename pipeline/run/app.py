"""Hydra glue: compose the config, hand a plain resolved dict to pipeline.run.job, summarise a sweep at its end.

Job errors never reach Hydra: each one is caught and recorded as a `failed` row, so a multirun always runs
every point (Hydra's basic sweeper would otherwise stop at the end of the batch and skip the summary).
The exit status is decided by main() from FAILED and NOTHING_RAN.
"""
from __future__ import annotations

import errno
import logging
import os
import signal
import sys
import threading
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from pipeline.config import schema
from pipeline.config.paths import CONF_DIR

schema.register()


log = logging.getLogger(__name__)
FAILED: list[str] = []  # run ids (or a sweep dir) that failed in this process
NOTHING_RAN: list[str] = []  # a run, or a sweep, none of whose points ran (every one unsupported): exit status 3
STOPPED: list[str] = []  # why this process stopped running jobs (SIGTERM, Ctrl-C): the rest are marked not run


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def hydra_main(cfg: DictConfig) -> float:
    """One job. Its return value is its objective (pipeline/analysis/select.py): what a search sweeper minimises."""
    from pipeline.analysis import summary
    from pipeline.config import errors
    from pipeline.run import job, spec

    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    meta = job.JobMeta(sweep=hc.runtime.choices.get("sweep", "multirun") if multirun else None,
                       job=hc.job.num if multirun else None, overrides=list(hc.overrides.task))
    out_dir = Path(hc.runtime.output_dir)
    install_sigterm()
    hydra_write_error = _HYDRA_WRITE_ERRORS[0] if _HYDRA_WRITE_ERRORS else None
    _HYDRA_WRITE_ERRORS.clear()
    control = None  # what this glue needs of the config, read once it has resolved
    try:
        config = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
        control = spec.Control.of(config)
        if spec.Identity.of(config).backend == "auto":
            raise schema.ConfigError("backend=auto is resolved by `python -m pipeline`; when composing the config "
                                     "yourself name a backend (one of conf/backend/)")
    except Exception as err:  # an interpolation that does not resolve, or the check above
        outcome = job.record_config_error(out_dir, meta, OmegaConf.to_container(cfg, resolve=False), err)
    else:
        if hydra_write_error is not None:  # a full disk: this point fails, the sweep goes on
            outcome = job.record_failed(out_dir, meta, config,
                                        _hydra_write_failure(hydra_write_error, hc, control.cache_dir))
            print(f"error: {'job ' + str(meta.job) if multirun else 'the run'}: {outcome.row['error']}",
                  file=sys.stderr, flush=True)
        elif STOPPED:  # the sweep was stopped: Hydra still hands over its remaining points; record, do not run
            outcome = job.record_not_run(out_dir, meta, config, STOPPED[0])
        else:
            try:
                outcome = _run(config, control.resume, out_dir, meta, multirun, hc.job.num if multirun else 0,
                               list(hc.overrides.task))
                if outcome is None:  # kept by resume: its objective comes from the tables it wrote before
                    return _objective(cfg, control, *_kept_tables(out_dir))
            except Exception as err:  # noqa: BLE001 - outside run_job (resume's check): this point fails alone,
                # and the sweep and its summary go on (the sweeper would stop at a raised exception)
                outcome = job.record_failed(out_dir, meta, config, f"{type(err).__name__}: {errors.one_line(err)}")
    if outcome.status == "failed":
        FAILED.append(outcome.run_id)
    if not multirun and outcome.status == "unsupported":
        NOTHING_RAN.append(outcome.run_id)
    if not multirun:
        print(summary.job_summary(outcome, out_dir))
    tables = outcome.tables
    return _objective(cfg, control, outcome.status, tables.get("summary"), tables.get("accuracy"),
                      outcome.row.get("benchmark_iterations"))


def _objective(cfg: DictConfig, control, status: str, summary_rows, accuracy_rows, iterations) -> float:
    """The job's objective; PENALTY rather than an error, so that a sweeper always gets a number. Its rule is the
    config's select.*: from `control` (spec.Control), or where the config did not resolve, cfg.select alone."""
    from pipeline.analysis import select

    try:
        if control is not None:
            rule = control.select
        else:
            rule = OmegaConf.to_container(cfg.select, resolve=True) if "select" in cfg else None
        return select.objective(status, _rows(summary_rows), _rows(accuracy_rows), iterations, rule)
    except Exception as err:  # noqa: BLE001 - a bad select.* is reported at the end of the sweep
        log.warning("objective: %s; this job counts as infeasible (%g)", err, select.PENALTY)
        return select.PENALTY


def _rows(table) -> list[dict]:
    """A stage table as rows (stages may return columns: {name: [values]})."""
    if isinstance(table, dict):
        return [dict(zip(table, values)) for values in zip(*table.values())]
    return list(table or [])


def _kept_tables(out_dir: Path) -> tuple:
    from pipeline import results

    kept = results.load(out_dir, tables=("runs", "summary", "accuracy"))
    iterations = kept.runs["benchmark_iterations"].iloc[0] if "benchmark_iterations" in kept.runs else None
    return ("ok", kept.summary.to_dict("records"), kept.accuracy.to_dict("records"), iterations)


def _run(config: dict, resume: bool, out_dir: Path, meta, multirun: bool, num: int, overrides: list[str]):
    """One job with its progress display; None when resume keeps an earlier ok result."""
    from pipeline.run import job, progress

    kept = job.previous_ok(out_dir, config) if resume else None
    if kept:
        log.info("resume: job %s already ok with this config (run %s); kept", meta.job, kept.run_id)
        return None
    if not multirun:
        progress.begin()
    elif not progress.began_here():  # a launcher's worker process (joblib, submitit, Ray): plain lines, per job
        progress.begin(progress.Sweep.from_points(HydraConfig.get().sweep.dir), plain=True)
    progress.start_job(num, overrides)
    try:
        outcome = job.run_job(config, out_dir, meta)
        progress.current().job_finished(outcome.status, outcome.error)
        if STOPPED:  # asked to stop once the stages had run: the job's tables were finished all the same
            print(f"interrupted ({STOPPED[0]}) during {'job ' + str(meta.job) if multirun else 'the run'}, after "
                  f"its stages: its row is recorded as {outcome.status}"
                  + ("; the points not run yet are recorded as not run, resume with resume=true "
                     f"hydra.sweep.dir={out_dir.parent}" if multirun else ""), file=sys.stderr, flush=True)
        return outcome
    except (KeyboardInterrupt, job.Interrupted) as stop:  # run_job has recorded the row
        why = f"{stop}" if str(stop) else "Ctrl-C"
        STOPPED.append(why)
        progress.current().job_finished("failed", f"interrupted ({why})")
        print(f"interrupted ({why}) during {'job ' + str(meta.job) if multirun else 'the run'}: its row is "
              f"recorded as failed" + ("; the points not run yet are recorded as not run, resume with "
                                       f"resume=true hydra.sweep.dir={out_dir.parent}" if multirun else ""),
              file=sys.stderr, flush=True)
        return stop.outcome
    finally:
        if not multirun:
            progress.end()


def install_sigterm() -> None:
    """SIGTERM (a scheduler's time limit, `kill`) stops the run, whatever it is doing: see _on_sigterm."""
    if threading.current_thread() is threading.main_thread():  # signal handlers live in the main thread only
        signal.signal(signal.SIGTERM, _on_sigterm)


def _on_sigterm(signum, frame):
    """Interrupts a job's stages (run_job records its row as interrupted). Anywhere else (Hydra composing the next
    point, a job writing its tables, the end-of-sweep summary) it is only noted: the job in hand is finished and
    recorded, the points not run yet are recorded as not run, the summary runs, and the exit status is 1."""
    from pipeline.run import job

    if not STOPPED:
        STOPPED.append("SIGTERM")
    job.request_stop("SIGTERM")


# Hydra writes <job>/.hydra/*.yaml itself before it calls the task. On a full disk its OSError would end the whole
# sweep, outside any job's handling: here it is kept, and hydra_main fails that one point with it.
_HYDRA_WRITE_ERRORS: list[OSError] = []


def _guard_hydra_writes() -> None:
    from hydra.core import utils

    real = utils._save_config
    if getattr(real, "pipeline_guarded", False):
        return

    def save_config(cfg, filename, output_dir):
        try:
            real(cfg, filename, output_dir)
        except OSError as err:
            if err.filename is None:
                err.filename = str(Path(output_dir) / filename)
            _HYDRA_WRITE_ERRORS.append(err)

    save_config.pipeline_guarded = True
    utils._save_config = save_config


_guard_hydra_writes()


def share_listing_repository() -> None:
    """For --help and --hydra-help: Hydra lists every config group's options (twice: its own groups, then the app's),
    and each listing call deep-copies its whole config repository (every plugin's configs in the ConfigStore) only to
    set the same search path on it again: 87 copies, most of what --help cost. Here calls with the same config name
    and overrides share one copy. The copy exists so that the loader's own repository is never changed, and a shared
    one is only read (listed, or loaded through its cache), so the help printed is the same."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl

    real = ConfigLoaderImpl._parse_overrides_and_create_caching_repo
    if getattr(real, "pipeline_shared", False):
        return
    made: dict = {}

    def parse_and_share(self, config_name, overrides):
        key = (id(self), config_name, tuple(overrides))
        if key not in made:
            made[key] = real(self, config_name, overrides)
        return made[key]

    parse_and_share.pipeline_shared = True
    ConfigLoaderImpl._parse_overrides_and_create_caching_repo = parse_and_share
# Hydra logs each job to <job>/<name>.log as well; on a full disk every line it cannot write there would print a
# "--- Logging error ---" traceback. The console still shows the lines; the row says what failed.
logging.raiseExceptions = False


def _hydra_write_failure(err: OSError, hc, cache_dir: str) -> str:
    """Which directory refused Hydra's files, by the key that sets it; and whether cache.dir shares its disk."""
    key = "hydra.sweep.dir" if hc.mode == RunMode.MULTIRUN else "hydra.run.dir"
    where = hc.sweep.dir if hc.mode == RunMode.MULTIRUN else hc.run.dir
    full = "is full" if err.errno == errno.ENOSPC else "cannot be written"
    message = f"{key} = '{where}' {full}: Hydra could not write {err.filename} ({err.strerror or err})"
    try:
        if cache_dir and os.stat(cache_dir).st_dev == os.stat(where).st_dev:
            message += f" (cache.dir = '{cache_dir}' is on the same filesystem)"
    except OSError:
        pass
    return message


def _require_writable(path: str, key: str) -> None:
    """Hydra creates its output directory itself and would answer a bad one with a traceback."""
    try:
        Path(path).mkdir(parents=True, exist_ok=True)
        probe = Path(path) / f".write-test-{os.getpid()}"
        try:  # real bytes, synced: creating an empty file succeeds on a full disk
            with open(probe, "wb") as f:
                f.write(b"\0" * 65536)
                f.flush()
                os.fsync(f.fileno())
        finally:
            probe.unlink(missing_ok=True)
    except OSError as err:
        print(f"error: {key} = '{path}': cannot write there ({err.strerror or err}); "
              f"choose a writable directory, e.g. {key}=outputs/...", file=sys.stderr)
        sys.exit(1)  # SystemExit passes through Hydra's error reporting


class SweepSummary(Callback):
    """Checks where a run will write before it starts; at the end of a multirun, one line per point."""

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        _require_writable(config.hydra.run.dir, "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        from pipeline.run import progress

        _require_writable(config.hydra.sweep.dir, "hydra.sweep.dir")
        # Jobs in other processes (joblib, submitit, Ray) print their own plain lines: no live display over them.
        in_process = str(config.hydra.launcher.get("_target_", "")).endswith(".BasicLauncher")
        progress.begin(progress.Sweep.from_hydra(config.hydra), plain=not in_process)

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        from pipeline import results
        from pipeline.analysis import summary
        from pipeline.run import progress

        progress.end()  # the live display goes before the table prints
        sweep_dir = Path(config.hydra.sweep.dir)
        loaded = results.load(sweep_dir, tables=("runs", "summary", "accuracy"))
        print(summary.sweep_summary(loaded, sweep_dir))
        print(_select(sweep_dir, loaded), flush=True)
        lost = summary.lost_jobs(sweep_dir)
        if lost:
            print(f"lost: {len(lost)} job(s) left no runs row (killed?): {', '.join(lost)}; "
                  f"rerun with resume=true hydra.sweep.dir={sweep_dir}")
        runs = loaded.runs
        if runs.empty or lost or loaded.missing or (runs["status"] == "failed").any():
            FAILED.append(str(sweep_dir))
        elif not (runs["status"] == "ok").any():
            NOTHING_RAN.append(str(sweep_dir))
        if config.report.enabled:
            _report(sweep_dir)
        if STOPPED:
            print(f"stopped ({STOPPED[0]}): the summary above is complete up to the stop; exiting with status 1",
                  file=sys.stderr, flush=True)


def _select(sweep_dir: Path, loaded) -> str:
    """The build to ship, recorded in the sweep's selection.json; its one line."""
    from pipeline.analysis import select

    try:
        return select.select_sweep(sweep_dir, loaded).line()
    except select.SelectError as err:
        return f"best: none: {err}"
    except Exception as err:  # noqa: BLE001 - choosing must never fail a finished sweep
        return (f"best: not chosen ({type(err).__name__}: {err}); retry with python -m pipeline.select "
                f"{sweep_dir}")


def _report(sweep_dir: Path) -> None:
    from pipeline.analysis import report

    try:
        print(f"report: {report.build_report(sweep_dir)}")
    except Exception as err:  # noqa: BLE001 - a plot must never fail a finished sweep
        log.warning("report not written (%s: %s); retry with python -m pipeline.report %s",
                    type(err).__name__, err, sweep_dir)

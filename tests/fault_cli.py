"""`python tests/fault_cli.py FAULT [pipeline args]`: the real CLI, killed with SIGKILL at one moment.

FAULT is `export` (while the export writes its artifact), `build` (while the build writes its artifact),
`table:<name>` (once the job has written <name>.parquet into its temporary tables directory; `table:published`:
once that directory is in place), all as `kill -9` would: no cleanup, no handler runs. `enospc:samples` and
`enospc:all` make writing the samples table (or every table) fail with ENOSPC; `readonly-cache` makes the cache
directory refuse new files, as a read-only filesystem does. `enospc:hydra` makes Hydra's own `.hydra/*.yaml`
writes fail with ENOSPC for every job after job 0 (a disk that filled during job 0).
`sigterm:<moment>` sends the process SIGTERM (the handler runs, unlike kill -9): `sigterm:table:<name>` once the
job has written <name>.parquet into its temporary tables directory, `sigterm:between` while Hydra composes the
point after the first job that finished (or starts it, composed by the sweeper), `sigterm:compose` while
the sweeper composes the points (before any job), `sigterm:summary` as the end-of-sweep summary starts. A fault
fires in the job whose precision is $FAULT_PRECISION (all jobs if unset).
`raise:runner` makes the DAG runner itself raise (a bug outside any stage, which run_job's stage handling never
sees); `raise:resume` makes resume's check of an earlier result raise (outside run_job altogether).
"""
import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def die():
    os.kill(os.getpid(), signal.SIGKILL)


def main():
    fault, sys.argv = sys.argv[1], [sys.argv[0], *sys.argv[2:]]
    target = os.environ.get("FAULT_PRECISION")
    if fault == "export":
        from stages import export

        original = export._export_torch

        def export_then_die(*args):
            original(*args)
            die()  # the file is written, the cache entry is not complete
        export._export_torch = export_then_die
    elif fault == "build":
        from stages.onnxruntime import build

        original_build = build.run

        def build_then_die(inputs, params, out_dir):
            if target in (None, params["precision"]):
                (out_dir / build.FILE).write_bytes(b"half an engine")
                die()
            return original_build(inputs, params, out_dir)
        build.run = build_then_die
    elif fault.startswith("sigterm:"):
        _sigterm_at(fault.partition(":")[2], target)
    elif fault == "enospc:hydra":
        _fail_hydra_writes()
    elif fault.startswith("table:"):
        _die_while_writing_tables(fault.partition(":")[2], target)
    elif fault.startswith("enospc:"):
        _fail_writing_tables(fault.partition(":")[2], target)
    elif fault == "readonly-cache":
        _read_only_cache()
    elif fault == "raise:runner":
        _runner_raises(target)
    elif fault == "raise:resume":
        _resume_check_raises(target)
    from pipeline.__main__ import main as pipeline_main

    pipeline_main()


def _die_while_writing_tables(table: str, target: str | None) -> None:
    """Die once `table`.parquet is written into the job's temporary tables directory; `published`: once the
    directory has been renamed into place."""
    from pipeline import results

    real_write, real_rename = results.pq.write_table, os.rename

    def write_then_die(data, where, **kw):
        real_write(data, where, **kw)
        if table != "published" and os.path.basename(where.name) == f"{table}.parquet" and _chosen(target):
            where.flush()
            os.fsync(where.fileno())
            die()

    def rename_then_die(src, dst):
        real_rename(src, dst)
        if table == "published" and os.path.basename(dst) == results.TABLES_DIR and _chosen(target):
            die()
    results.pq.write_table, results.os.rename = write_then_die, rename_then_die


def _sigterm_at(moment: str, target: str | None) -> None:
    from hydra._internal.config_loader_impl import ConfigLoaderImpl

    from pipeline import results
    from pipeline.analysis import summary
    from pipeline.run import job

    def term():
        os.kill(os.getpid(), signal.SIGTERM)  # the handler runs at the next bytecode of the main thread

    if moment.startswith("table:"):
        table, real_write = moment.partition(":")[2], results.pq.write_table

        def write_then_term(data, where, **kw):
            real_write(data, where, **kw)
            if os.path.basename(where.name) == f"{table}.parquet" and _chosen(target):
                term()
        results.pq.write_table = write_then_term
    elif moment == "summary":
        real_summary = summary.sweep_summary

        def term_then_summarise(*args, **kw):
            term()
            return real_summary(*args, **kw)
        summary.sweep_summary = term_then_summarise
    elif moment in ("between", "compose"):
        real_load, real_run = ConfigLoaderImpl.load_sweep_config, job.run_job
        state = {"calls": 0, "finished": False, "fired": False}

        def run_and_note(*args, **kw):
            outcome = real_run(*args, **kw)
            state["finished"] = True
            return outcome

        def load_and_term(self, *args, **kw):
            state["calls"] += 1
            due = state["finished"] if moment == "between" else state["calls"] == 2
            if due and not state["fired"]:
                state["fired"] = True
                term()
            return real_load(self, *args, **kw)
        ConfigLoaderImpl.load_sweep_config, job.run_job = load_and_term, run_and_note
        if moment == "between":  # the in-process launcher is handed the sweeper's composition of the point: the
            # moment is then Hydra starting its job (patched before Hydra's plugin scan imports its launcher)
            from hydra.core import utils

            real_hydra_run_job = utils.run_job

            def hydra_run_job_and_term(*args, **kw):
                if state["finished"] and not state["fired"]:
                    state["fired"] = True
                    term()
                return real_hydra_run_job(*args, **kw)
            utils.run_job = hydra_run_job_and_term
    else:
        raise SystemExit(f"unknown moment {moment!r}")


def _fail_hydra_writes() -> None:
    """Hydra's `.hydra/*.yaml` of every job after job 0 cannot be written: the disk filled during job 0."""
    import errno

    from hydra.core import utils
    from hydra.core.hydra_config import HydraConfig

    real_save = utils._save_config

    def save_or_fail(cfg, filename, output_dir):
        if HydraConfig.get().job.num >= 1:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(output_dir / filename))
        real_save(cfg, filename, output_dir)
    utils._save_config = save_or_fail


def _fail_writing_tables(which: str, target: str | None) -> None:
    """A full disk while the job writes its tables: `samples` fails that table only, `all` every table file."""
    import errno

    from pipeline import results

    real_write = results.pq.write_table

    def write_or_fail(data, where, **kw):
        name = os.path.basename(where.name)
        if _chosen(target) and (which == "all" or name == f"{which}.parquet"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), where.name)
        real_write(data, where, **kw)
    results.pq.write_table = write_or_fail


def _read_only_cache() -> None:
    """The cache directory as a read-only filesystem shows it: no new file (a lock) can be created in it."""
    import errno

    import filelock

    from pipeline.run import cache

    class ReadOnlyLock(filelock.FileLock):
        def acquire(self, *args, **kwargs):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), self.lock_file)
    cache.FileLock = ReadOnlyLock


def _runner_raises(target: str | None) -> None:
    from pipeline.run import runner

    real_run = runner.run

    def run_or_raise(*args, **kwargs):
        if _chosen(target):
            raise RuntimeError("the runner broke outside any stage")
        return real_run(*args, **kwargs)
    runner.run = run_or_raise


def _resume_check_raises(target: str | None) -> None:
    from pipeline.run import job

    real = job.previous_ok

    def check_or_raise(*args, **kwargs):
        if _chosen(target):
            raise ValueError("the resume check broke")
        return real(*args, **kwargs)
    job.previous_ok = check_or_raise


def _chosen(target: str | None) -> bool:
    return target in (None, _current_precision())


def _current_precision():
    from hydra.core.hydra_config import HydraConfig

    try:
        return HydraConfig.get().runtime.choices.get("precision")
    except ValueError:
        return None


if __name__ == "__main__":
    main()

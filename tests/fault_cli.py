"""`python tests/fault_cli.py FAULT [pipeline args]`: the real CLI, killed with SIGKILL at one moment.

FAULT is `export` (while the export writes its artifact), `build` (while the build writes its artifact),
`table:<name>` (once the job has written <name>.parquet into its temporary tables directory; `table:published`:
once that directory is in place), all as `kill -9` would: no cleanup, no handler runs. `enospc:samples` and
`enospc:all` make writing the samples table (or every table) fail with ENOSPC; `readonly-cache` makes the cache
directory refuse new files, as a read-only filesystem does. A fault fires in the job whose precision is
$FAULT_PRECISION (all jobs if unset).
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
    elif fault.startswith("table:"):
        _die_while_writing_tables(fault.partition(":")[2], target)
    elif fault.startswith("enospc:"):
        _fail_writing_tables(fault.partition(":")[2], target)
    elif fault == "readonly-cache":
        _read_only_cache()
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

    from pipeline import cache

    class ReadOnlyLock(filelock.FileLock):
        def acquire(self, *args, **kwargs):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), self.lock_file)
    cache.FileLock = ReadOnlyLock


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

"""Tidy result tables: written per job as Parquet, loaded across jobs into pandas.

Every job writes ``<job_dir>/tables/<table>.parquet`` for each table that has
rows (see ``SCHEMAS`` for the fixed columns). ``load()`` finds those files below
a job directory, a sweep directory or a whole outputs root and concatenates
them, unifying the ``runs`` table whose extra columns differ between jobs.

Column types are fixed at write time so that schema promotion across jobs is
predictable. Extra ``runs`` columns are typed from their values (bool -> bool,
int -> int64, float -> float64, str/None -> string), except for naming
conventions that always win so one job cannot drift from another: ``env_*`` and
``*_cache`` are strings, ``*_seconds`` are float64.

pandas dtypes returned by ``load()`` (chosen so that a column's dtype does not
depend on whether some job happened to leave it null):

- integers  -> ``Int64`` (nullable; missing is ``pd.NA``, never a silent float)
- booleans  -> ``boolean`` (nullable)
- strings   -> pandas' default string dtype (``str`` in pandas 3, object in 2)
- floats    -> ``float64`` (missing is NaN)
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import shutil
import uuid
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

if TYPE_CHECKING:  # pandas is imported by load(), not by the writers: a job pays for it only when it reads
    import pandas as pd

log = logging.getLogger(__name__)

TABLES = ("runs", "summary", "samples", "accuracy", "layers", "gpu", "layer_errors", "predictions")
TABLES_DIR = "tables"  # <job_dir>/tables/<table>.parquet
JOB_CONFIG = "config.resolved.yaml"  # what every job writes first: a directory holding it is a job
INCOMPLETE = "no complete tables: the job was killed, or could not write them; rerun it with resume=true"
# <sweep_dir>/selection.json: the build to ship, chosen at the end of a sweep (pipeline/analysis/select.py). The
# job tables stay as written; where the loaded path holds such a file (every sweep writes one), load() adds its
# verdicts to `runs` as SELECTION_COLUMNS: `selected` (True on the chosen run, False elsewhere), `objective` (what a
# search sweeper was told; lower is better) and `feasible`.
SELECTION_FILE = "selection.json"
SELECTION_COLUMNS = ("selected", "objective", "feasible")
# <job_dir>/tables/manifest.json: each table file's size and sha256, written with the tables (inside the directory
# that is renamed into place). load() checks the sizes (cheap), resume (pipeline/run/job.py previous_ok) the digests: a
# job whose files disagree (a table deleted or changed by hand) is skipped, with the reason, and rerun by resume.
MANIFEST = "manifest.json"
# <sweep_dir>/points.json: every point of the sweep's grid (its overrides), written by the sweeper before it
# launches any. load() compares it with the sweep's runs rows: a point without one is in Results.missing.
POINTS_FILE = "points.json"
# Top-level config keys that never change a result (pipeline/run/job.py): no runs column, no swept axis, and no part
# of a point's identity (resume=true on the rerun of a point is the same point).
NEVER_CHANGES_RESULT = ("cache", "resume", "isolation", "report", "select", "gpu")

_S, _I, _F = pa.string(), pa.int64(), pa.float64()

SCHEMAS: dict[str, pa.Schema] = {
    "runs": pa.schema([
        ("run_id", _S), ("sweep", _S), ("job", _I), ("status", _S), ("error", _S),
        ("backend", _S), ("model", _S), ("precision", _S), ("batch_size", _I),
        ("optimization_level", _I), ("max_aux_streams", _I), ("overrides", _S),
        ("config_hash", _S), ("config", _S), ("started", _S), ("job_seconds", _F),
    ]),
    "summary": pa.schema([
        ("run_id", _S), ("metric", _S), ("stat", _S), ("value", _F), ("unit", _S),
        ("counts", _S),  # what a figure counts, where the metric alone does not say (peak memory: stages/gpu/costs)
    ]),
    "samples": pa.schema([
        ("run_id", _S), ("trial", _I), ("iteration", _I), ("metric", _S), ("value_ms", _F),
    ]),
    "accuracy": pa.schema([
        ("run_id", _S), ("output", _S), ("metric", _S), ("value", _F), ("reference", _S), ("samples", _I),
    ]),
    "layers": pa.schema([
        ("run_id", _S), ("layer", _S), ("layer_type", _S), ("dtype", _S), ("tactic", _S),
        ("stream", _I), ("time_ms", _F), ("share", _F), ("source", _S),
        ("median_ms", _F),  # per inference, where the profiler reports one; else null
    ]),
    "gpu": pa.schema([
        ("run_id", _S), ("t_s", _F), ("sm_clock_mhz", _F), ("mem_clock_mhz", _F),
        ("power_w", _F), ("temp_c", _F), ("util_pct", _F), ("throttle", _S),
    ]),
    # per intermediate tensor of a converted graph against fp32 (stages/layer_errors.py), in depth order
    "layer_errors": pa.schema([
        ("run_id", _S), ("layer", _S), ("tensor", _S), ("op_type", _S), ("depth", _I), ("rel_err", _F),
        ("cosine", _F), ("max_abs_err", _F), ("nan", _I), ("inf", _I), ("input_rel_err", _F),
        ("quantized", pa.bool_()), ("qdq_nodes", _S), ("first_over", pa.bool_()),
    ]),
    # one row per validation sample of the judged output (stages/accuracy.py), a few bytes each: a column is null
    # where it does not apply (correctness needs class labels, agreement class scores, errors float labels)
    "predictions": pa.schema([
        ("run_id", _S), ("output", _S), ("sample", pa.int32()),
        ("run_correct", pa.bool_()), ("reference_correct", pa.bool_()),  # top-1 right, the build and fp32
        ("agree", pa.bool_()),                                           # the build's top-1 is fp32's
        ("run_error", pa.float32()), ("reference_error", pa.float32()),  # |prediction - label|, mean per sample
    ]),
}

# Config keys with a fixed column in `runs`; every scalar backend option gets a column named after its key
# (`backend.optimization_level` -> optimization_level), other overridden keys one named after their path.
CONFIG_COLUMNS = {
    "batch_size": "batch_size",
    "benchmark.warmup_ms": "warmup_ms",
    "benchmark.duration_s": "duration_s",
    "benchmark.min_iterations": "min_iterations",
    "cache.enabled": "cache_enabled",
    "seed": "seed",
}


def column_of(key: str) -> str:
    """The runs column a config key's value lands in."""
    if key in CONFIG_COLUMNS:
        return CONFIG_COLUMNS[key]
    head, _, rest = key.partition(".")
    return rest if head == "backend" and rest and "." not in rest else key.replace(".", "_")


RUN_STATUSES = ("ok", "failed", "unsupported")

# Only the runs table may carry columns beyond its fixed schema.
_OPEN_TABLES = {"runs"}
# Tables with a handful of rows per job (see _write_options).
_SMALL_TABLES = {"runs", "summary", "accuracy"}


# --------------------------------------------------------------------------- writing


def write_tables(job_dir: str | os.PathLike, tables: Mapping[str, object]) -> list[Path]:
    """Write each non-empty table to ``<job_dir>/tables/<table>.parquet``, all of them as one unit.

    A table value is either a list of row dicts or a dict of column -> values
    (columnar, much faster for large tables such as ``samples``). Missing fixed
    columns become null. Returns the paths written.

    The files, and a MANIFEST of their sizes and digests, are written into a hidden temporary directory, fsynced,
    and the directory is renamed to
    ``tables/`` last: a reader (load, resume) sees every table of the job or none, never a runs row without
    the tables it describes. Tables already there are moved aside (``tables.replaced-<time>/``), never
    overwritten. If anything fails, the temporary directory is removed and the error propagates.
    """
    unknown = set(tables) - set(TABLES)
    if unknown:
        raise ValueError(f"unknown table(s) {sorted(unknown)}; expected one of {TABLES}")
    built = {name: t for name in TABLES if (t := build_table(name, tables.get(name))) is not None}
    job_dir = Path(job_dir)
    job_dir.mkdir(parents=True, exist_ok=True)
    tmp = job_dir / f".tables.{os.getpid()}.{uuid.uuid4().hex}.tmp"
    try:
        tmp.mkdir()
        files = {}
        for name, table in built.items():
            with open(tmp / f"{name}.parquet", "wb") as f:
                pq.write_table(table, f, **_write_options(name))
                f.flush()
                os.fsync(f.fileno())
            files[f"{name}.parquet"] = _file_entry(tmp / f"{name}.parquet")
        _write_json(tmp / MANIFEST, {"version": 1, "files": files})
        _fsync_dir(tmp)
        final = job_dir / TABLES_DIR
        aside = set_aside(job_dir)
        try:
            os.rename(tmp, final)
        except BaseException:
            if aside is not None:  # put the old tables back rather than leave the job with none
                os.rename(aside, final)
            raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _fsync_dir(job_dir)
    return [final / f"{name}.parquet" for name in built]


def _file_entry(path: Path) -> dict:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return {"size": path.stat().st_size, "sha256": h.hexdigest()}


def _write_json(path: Path, data) -> None:
    """`path`, written under a temporary name, fsynced and renamed into place."""
    import json

    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_points(sweep_dir: str | os.PathLike, points: Iterable[Iterable[str]]) -> Path:
    """`<sweep_dir>/points.json`: the sweep's grid, each point as its list of overrides (atomically replaced)."""
    path = Path(sweep_dir) / POINTS_FILE
    _write_json(path, {"version": 1, "points": [list(p) for p in points]})
    return path


def verify_tables(job_dir: str | os.PathLike, digests: bool = False) -> str | None:
    """Why the job's `tables/` disagree with their MANIFEST (a file missing, of another size, with digests: of
    other bytes), or None: they agree, or there is no manifest (tables written before there was one)."""
    return _check_manifest(str(Path(job_dir) / TABLES_DIR), digests)


def _check_manifest(tables_dir: str, digests: bool = False) -> str | None:
    import json

    try:
        with open(os.path.join(tables_dir, MANIFEST), encoding="utf-8") as f:
            files = json.load(f)["files"]
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as e:
        return f"its tables' {MANIFEST} is unreadable ({type(e).__name__}: {e}); rerun it with resume=true"
    problems = []
    for name, entry in files.items():
        path = os.path.join(tables_dir, name)
        try:
            size = os.stat(path).st_size
        except OSError:
            problems.append(f"{name} is missing")
            continue
        if size != entry.get("size"):
            problems.append(f"{name} has {size} bytes, not {entry.get('size')}")
        elif digests and _file_entry(Path(path))["sha256"] != entry.get("sha256"):
            problems.append(f"{name} is not the file written (sha256 mismatch)")
    if not problems:
        return None
    return (f"its tables disagree with the {MANIFEST} written with them ({'; '.join(problems)}): changed or "
            f"deleted after they were published; none of them is loaded; rerun it with resume=true")


def point_key(overrides: str | Iterable[str]) -> str:
    """A sweep point's identity: its overrides less hydra.* and the keys that never change a result, sorted."""
    items = overrides.split() if isinstance(overrides, str) else [w for o in overrides for w in str(o).split()]
    kept = []
    for item in items:
        key = item.lstrip("+~").partition("=")[0]
        if key.startswith("hydra.") or key.split(".")[0] in NEVER_CHANGES_RESULT:
            continue
        kept.append(item)
    return " ".join(sorted(kept))


def set_aside(job_dir: str | os.PathLike) -> Path | None:
    """Move a job's existing ``tables/`` to ``tables.replaced-<time>/`` (kept, never overwritten); its new path."""
    old = Path(job_dir) / TABLES_DIR
    if not old.is_dir():
        return None
    aside = old.with_name(f"{TABLES_DIR}.replaced-{_dt.datetime.now().strftime('%Y%m%d-%H%M%S-%f')}")
    old.rename(aside)
    return aside


def build_table(name: str, data: object) -> pa.Table | None:
    """Build the pyarrow Table for ``name`` with its fixed schema; None when empty."""
    columns = _to_columns(name, data)
    if columns is None:
        return None
    schema = SCHEMAS[name]
    extras = [c for c in columns if c not in schema.names]
    if extras and name not in _OPEN_TABLES:
        raise ValueError(f"table {name!r}: unknown column {extras[0]!r} "
                         f"(fixed columns: {schema.names})")
    n = len(next(iter(columns.values())))
    arrays, fields = [], []
    for field in schema:
        values = columns.get(field.name)
        arrays.append(pa.nulls(n, field.type) if values is None
                      else _typed_array(name, field.name, values, field.type))
        fields.append(field)
    for col in extras:
        arr = _typed_array(name, col, columns[col], _extra_type(name, col, columns[col]))
        arrays.append(arr)
        fields.append(pa.field(col, arr.type))
    if name == "runs":
        _check_status(arrays[schema.get_field_index("status")])
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def fits_column(table: str, column: str, value) -> bool:
    """Whether `value` can be stored in `table`'s fixed `column` (any value fits a column that is not fixed)."""
    schema = SCHEMAS[table]
    if column not in schema.names:
        return True
    kind = schema.field(column).type
    if pa.types.is_integer(kind):
        return isinstance(value, int) and not isinstance(value, bool)
    if pa.types.is_floating(kind):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, str)


def _to_columns(name: str, data: object) -> dict[str, list] | None:
    """Normalise rows or columns to an ordered dict of equal-length columns."""
    if data is None:
        return None
    if isinstance(data, Mapping):
        columns = {str(k): v for k, v in data.items()}
        lengths = {k: len(v) for k, v in columns.items()}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"table {name!r}: columns have different lengths {lengths}")
        if not lengths or not next(iter(lengths.values())):
            return None
        return columns
    rows = list(data)
    if not rows:
        return None
    keys: dict[str, None] = {}  # ordered union of keys: first appearance wins
    for row in rows:
        if not isinstance(row, Mapping):
            raise ValueError(f"table {name!r}: rows must be dicts, got {type(row).__name__}")
        keys.update(dict.fromkeys(row))
    return {k: [row.get(k) for row in rows] for k in keys}


def _extra_type(table: str, col: str, values) -> pa.DataType:
    """Type of an extra runs column: naming conventions first, else from the values."""
    if col.startswith("env_") or col.endswith("_cache"):
        return _S
    if col.endswith("_seconds"):
        return _F
    try:
        inferred = pa.array(values).type
    except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
        raise ValueError(f"table {table!r}: column {col!r} has mixed or unsupported values: {e}") from e
    if pa.types.is_boolean(inferred):
        return pa.bool_()
    if pa.types.is_integer(inferred):
        return _I
    if pa.types.is_floating(inferred):
        return _F
    if pa.types.is_null(inferred) or pa.types.is_string(inferred) or pa.types.is_large_string(inferred):
        return _S
    raise ValueError(f"table {table!r}: column {col!r} must hold scalars "
                     f"(bool/int/float/str), got {inferred}")


def _typed_array(table: str, col: str, values, target: pa.DataType) -> pa.Array:
    """Convert values to ``target``, refusing lossy or cross-kind conversions.

    pa.array(..., type=int64) silently truncates 1.5 to 1, so values are inferred
    first and only safe numeric casts are allowed.
    """
    if target == _S and (col.startswith("env_") or col.endswith("_cache")):
        values = [None if v is None else str(v) for v in values]
    try:
        arr = pa.array(values)
        if arr.type == target:
            return arr
        if pa.types.is_null(arr.type):
            return pa.nulls(len(arr), target)
        if _numeric(arr.type) and _numeric(target):
            return arr.cast(target, safe=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
        raise ValueError(f"table {table!r}: column {col!r} cannot be stored as {target}: {e}") from e
    raise ValueError(f"table {table!r}: column {col!r} must be {target}, got {arr.type} values")


def _numeric(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_floating(t)


def _check_status(status: pa.Array) -> None:
    bad = pc.filter(status, pc.invert(pc.is_in(status, pa.array(RUN_STATUSES))))
    bad = bad.drop_null()
    if len(bad):
        raise ValueError(f"table 'runs': status must be one of {RUN_STATUSES}, got {bad[0].as_py()!r}")


def _write_options(name: str) -> dict:
    """Parquet options that keep load() cheap; it reads thousands of tiny files.

    Per-column-chunk overhead dominates those reads, so skip what a reader pays
    for but never uses: statistics (one row group per file, nothing to prune),
    the stored Arrow schema (our types map back exactly without it) and, for
    the few-row tables, dictionary pages.
    """
    options = {"write_statistics": False, "store_schema": False}
    if name in _SMALL_TABLES:
        options["use_dictionary"] = False
    if name == "predictions":  # a million samples in a few hundred KiB: sample numbers delta-encoded, flags as bits
        options.update(use_dictionary=["run_id", "output"], column_encoding={"sample": "DELTA_BINARY_PACKED"})
    return options


def _fsync_dir(path: Path) -> None:
    """Persist the rename itself (POSIX only; directories cannot be opened on Windows)."""
    if os.name != "posix":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- loading


class Results:
    """Tables of one or many jobs as pandas DataFrames (one attribute per table)."""

    runs: pd.DataFrame
    summary: pd.DataFrame
    samples: pd.DataFrame
    accuracy: pd.DataFrame
    layers: pd.DataFrame
    gpu: pd.DataFrame
    layer_errors: pd.DataFrame
    predictions: pd.DataFrame

    def __init__(self, path: Path, frames: Mapping[str, pd.DataFrame],
                 skipped: list[tuple[Path, str]] | None = None,
                 missing: list[tuple[Path, str]] | None = None, grid: Mapping[Path, int] | None = None):
        self.path = path
        self.skipped = list(skipped or [])
        # (sweep dir, overrides) of each point of a sweep's grid (its POINTS_FILE) without a runs row; and per sweep
        # dir with such a file, how many points its grid has
        self.missing = list(missing or [])
        self.grid = dict(grid or {})
        for name in TABLES:
            setattr(self, name, frames[name])

    def missing_lines(self) -> list[str]:
        """'sweep X: 2 of 6 points missing (no runs row): ...; run them with resume=true ...', one per sweep."""
        return _missing_lines(self.missing, self.grid)

    def metric(self, metric: str, stat: str = "median") -> pd.DataFrame:
        """``runs`` with the summary value of (metric, stat) as column ``f"{metric}_{stat}"``.

        Runs without that value (e.g. failed ones) get NaN. Raises KeyError when no
        run has it at all (most likely a typo), and pandas.errors.MergeError (a
        ValueError) when a run_id has it more than once.
        """
        s = self.summary
        hit = s.loc[(s["metric"] == metric) & (s["stat"] == stat), ["run_id", "value"]]
        if hit.empty:
            have = sorted(set(zip(s["metric"], s["stat"])))
            raise KeyError(f"no summary rows for metric={metric!r} stat={stat!r}; available: {have}")
        hit = hit.rename(columns={"value": f"{metric}_{stat}"})
        return self.runs.merge(hit, on="run_id", how="left", validate="many_to_one")

    def __repr__(self) -> str:
        counts = ", ".join(f"{t}={len(getattr(self, t))}" for t in TABLES)
        skipped = f", skipped={len(self.skipped)}" if self.skipped else ""
        missing = f", missing={len(self.missing)}" if self.missing else ""
        return f"Results({str(self.path)!r}, {counts}{skipped}{missing})"


def _missing_lines(missing: list[tuple[Path, str]], grid: Mapping[Path, int]) -> list[str]:
    by_sweep: dict[Path, list[str]] = {}
    for sweep_dir, point in missing:
        by_sweep.setdefault(sweep_dir, []).append(point)
    return [_missing_line(d, points, grid.get(d, len(points))) for d, points in by_sweep.items()]


def _missing_line(sweep_dir: Path, points: list[str], n: int) -> str:
    shown = "; ".join(f"[{p}]" for p in points[:5]) + (f"; and {len(points) - 5} more" if len(points) > 5 else "")
    return (f"{len(points)} of {n} points missing in {sweep_dir} (no runs row: the sweep stopped before them, or "
            f"their tables were lost): {shown}; run them with resume=true hydra.sweep.dir={sweep_dir}")


def load(path: str | os.PathLike, tables: Iterable[str] = TABLES) -> Results:
    """Load every ``tables/<table>.parquet`` below ``path`` (a job, sweep or outputs dir).

    Rows come in path order. Directories named ``cache`` are not searched. Unreadable files are skipped,
    logged and listed in ``Results.skipped``. Tables not requested (or without
    files) are empty DataFrames with the fixed columns. Where there is a SELECTION_FILE below ``path`` (or,
    for a job directory, in its sweep directory), ``runs`` also gets SELECTION_COLUMNS from all of them.

    Also in ``Results.skipped``, with the reason: a job whose tables disagree with their MANIFEST (sizes are
    checked; none of its tables is loaded), and per sweep with a POINTS_FILE, one line for the points of its grid
    that have no runs row (listed one by one in ``Results.missing``; the grid sizes in ``Results.grid``).
    """
    root = Path(path)
    if not root.exists():
        raise FileNotFoundError(f"results path does not exist: {root}")
    wanted = tuple(tables)
    unknown = set(wanted) - set(TABLES)
    if unknown:
        raise ValueError(f"unknown table(s) {sorted(unknown)}; expected one of {TABLES}")

    selections: list[str] = []
    manifests: list[str] = []
    grids: list[str] = []
    found, incomplete = _find(root, wanted, selections, manifests, grids)
    skipped = []
    # a job whose files disagree with its manifest loads none of them (a reader sees all of a job's tables or none)
    disagree = {os.path.dirname(d): why for d, why in zip(manifests, _check_all(manifests)) if why is not None}
    for job_dir, why in sorted(disagree.items()):
        log.warning("skipping job %s: %s", job_dir, why)
        skipped.append((Path(job_dir), why))
    incomplete = [d for d in incomplete if d not in disagree]
    jobs = [(name, f) for name, paths in found.items() for f in paths
            if not disagree or os.path.dirname(os.path.dirname(f)) not in disagree]
    parts: dict[str, list[pa.Table]] = {name: [] for name in TABLES}
    overrides: dict[str, list] = {}  # runs file -> its rows' overrides (for the sweeps' grids)
    for (name, f), (table, err) in zip(jobs, _read_all([f for _, f in jobs])):
        if err is None:
            parts[name].append(table)
            if grids and name == "runs" and "overrides" in table.column_names:
                overrides[f] = table.column("overrides").to_pylist()
        else:
            log.warning("skipping unreadable results file %s: %s", f, err)
            skipped.append((Path(f), err))
    for job_dir in incomplete:
        skipped.append((Path(job_dir), INCOMPLETE))
    missing, grid = _missing_points(grids, overrides, skipped) if "runs" in wanted else ([], {})
    for sweep_dir, line in zip(dict.fromkeys(d for d, _ in missing), _missing_lines(missing, grid)):
        log.warning("%s", line)
        skipped.append((sweep_dir, line))  # the sweep's missing points, on one line
    if incomplete:
        log.warning("%d job(s) under %s have no complete tables (%s): %s", len(incomplete), root, INCOMPLETE,
                    ", ".join(incomplete[:10]) + (" ..." if len(incomplete) > 10 else ""))
    if not jobs and not incomplete:
        log.warning("no results under %s: no %s/*.parquet below it", root, TABLES_DIR)
    frames = {name: _to_pandas(_concat(name, parts[name])) for name in TABLES}
    if "runs" in wanted:
        frames["runs"] = _with_selection(frames["runs"], _sweep_selection(root, selections), skipped)
    return Results(root, frames, skipped, missing, grid)


def incomplete_jobs(root: str | os.PathLike) -> list[Path]:
    """Job directories below `root` that a job started (they hold its config) but that have no complete tables."""
    return [Path(d) for d in _find(Path(root), ("runs",))[1]]


def _find(root: Path, tables: tuple[str, ...], selections: list[str] | None = None,
          manifests: list[str] | None = None, grids: list[str] | None = None
          ) -> tuple[dict[str, list[str]], list[str]]:
    """The table files below root by table, sorted; and the job directories without a complete tables/.
    The SELECTION_FILEs found on the way are appended to `selections`, the tables dirs holding a MANIFEST to
    `manifests`, the POINTS_FILEs to `grids`."""
    # Plain strings: sorting thousands of Path objects costs more than reading the walk.
    names = {f"{t}.parquet": t for t in tables}
    found: dict[str, list[str]] = {t: [] for t in tables}
    incomplete: list[str] = []
    if root.is_file():
        raise NotADirectoryError(f"results path is not a directory: {root}")
    # Symlinked directories are not followed: a "latest" link would load a job twice.
    for dirpath, dirnames, filenames in os.walk(root):
        if os.path.basename(dirpath) == TABLES_DIR:
            dirnames[:] = []  # a tables dir holds only table files (and their manifest)
            if manifests is not None and MANIFEST in filenames:
                manifests.append(dirpath)
            for fn in filenames:
                if fn in names:
                    found[names[fn]].append(os.path.join(dirpath, fn))
            continue
        # not searched: the artifact cache, tables set aside, tables still being written (hidden .tmp dirs)
        dirnames[:] = [d for d in dirnames if d != "cache" and not d.startswith((".", f"{TABLES_DIR}."))]
        if selections is not None and SELECTION_FILE in filenames:
            selections.append(os.path.join(dirpath, SELECTION_FILE))
        if grids is not None and POINTS_FILE in filenames:
            grids.append(os.path.join(dirpath, POINTS_FILE))
        started = JOB_CONFIG in filenames or os.path.isdir(os.path.join(dirpath, ".hydra"))
        if started and not os.path.isfile(os.path.join(dirpath, TABLES_DIR, "runs.parquet")):
            incomplete.append(dirpath)
    for paths in found.values():
        paths.sort()
    return found, sorted(incomplete)


def _check_all(tables_dirs: list[str]) -> list[str | None]:
    """_check_manifest (sizes only) of each tables dir, in order: ~25 us a job (a thread pool measured slower)."""
    return [_check_manifest(d) for d in tables_dirs]


def _missing_points(grids: list[str], overrides: dict[str, list], skipped: list[tuple[Path, str]]
                    ) -> tuple[list[tuple[Path, str]], dict[Path, int]]:
    """The points of each sweep's grid (a POINTS_FILE) that no runs row below its sweep dir has, and per sweep dir
    the size of its grid. Points are told apart by point_key (resume=true does not make another point)."""
    import json
    from collections import Counter

    missing: list[tuple[Path, str]] = []
    grid: dict[Path, int] = {}
    for f in sorted(grids):
        try:
            points = [list(p) for p in json.loads(Path(f).read_text(encoding="utf-8"))["points"]]
        except (OSError, ValueError, KeyError, TypeError) as e:
            log.warning("skipping unreadable sweep grid %s: %s", f, e)
            skipped.append((Path(f), f"{type(e).__name__}: {e}"))
            continue
        sweep_dir = os.path.dirname(f)
        below = sweep_dir + os.sep
        have = Counter(point_key(o or "") for path, rows in overrides.items() if path.startswith(below)
                       for o in rows)
        grid[Path(sweep_dir)] = len(points)
        for point in points:
            key = point_key(point)
            if have[key] > 0:
                have[key] -= 1
            else:
                missing.append((Path(sweep_dir), " ".join(point)))
    return missing, grid


def _sweep_selection(root: Path, found: list[str]) -> list[str]:
    """The selection files that apply: those below root, and for a job directory its sweep's (one level up)."""
    if (root / JOB_CONFIG).is_file() or (root / TABLES_DIR).is_dir():
        above = root.parent / SELECTION_FILE
        if above.is_file():
            found = [str(above), *found]
    return found


def _with_selection(runs: pd.DataFrame, files: list[str], skipped: list[tuple[Path, str]]) -> pd.DataFrame:
    """`runs` with SELECTION_COLUMNS, from the selection files (a run none of them names: False, NaN, NA);
    `runs` as it is without any file (a single run, a sweep that has not ended)."""
    import json

    if not files:
        return runs
    selected: set[str] = set()
    objective: dict[str, float] = {}
    feasible: dict[str, bool] = {}
    for f in sorted(set(files)):
        try:
            data = json.loads(Path(f).read_text(encoding="utf-8"))
            points = data.get("points") or {}
            chosen = data.get("selected")
        except (OSError, ValueError, AttributeError) as e:  # a broken file costs its marks, never the load
            log.warning("skipping unreadable selection file %s: %s", f, e)
            skipped.append((Path(f), f"{type(e).__name__}: {e}"))
            continue
        # one run id (a file written before one answer per workload), or a list of them
        selected.update(str(c) for c in ([chosen] if isinstance(chosen, str) else chosen or []))
        for run_id, point in points.items():
            objective[run_id], feasible[run_id] = point.get("objective"), point.get("feasible")
    return runs.assign(selected=runs["run_id"].isin(selected).astype("boolean"),
                       objective=runs["run_id"].map(objective).astype("float64"),
                       feasible=runs["run_id"].map(feasible).astype("object").astype("boolean"))


def _read_all(paths: list[str]) -> list[tuple[pa.Table | None, str | None]]:
    """Read files in a thread pool, in order: (table, None) or (None, error)."""
    if not paths:
        return []
    # Parquet decoding releases the GIL; per-file Python overhead does not, so
    # one thread per core measured fastest (more only contend for the GIL), and
    # each task gets a batch of files to keep executor bookkeeping small.
    workers = min(32, max(2, _cpu_count()), len(paths))
    size = max(1, len(paths) // (4 * workers))
    batches = [paths[i:i + size] for i in range(0, len(paths), size)]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return [r for batch in pool.map(_read_batch, batches) for r in batch]


def _cpu_count() -> int:
    try:  # respects taskset/cgroup CPU affinity, unlike os.cpu_count()
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _read_batch(paths: list[str]) -> list[tuple[pa.Table | None, str | None]]:
    return [_read_one(p) for p in paths]


def _read_one(path: str) -> tuple[pa.Table | None, str | None]:
    # ParquetFile skips the dataset machinery of pq.read_table (~3x less overhead
    # per small file); an open OSFile skips filesystem resolution; pre_buffer
    # would hop to Arrow's I/O pool for a few KiB. No nested threads per file.
    try:
        with pa.OSFile(path) as src:
            return pq.ParquetFile(src, pre_buffer=False).read(use_threads=False), None
    except Exception as e:  # truncated/corrupt/vanished files must not abort the whole load
        return None, f"{type(e).__name__}: {e}"


def _concat(name: str, parts: list[pa.Table]) -> pa.Table:
    """Concatenate per-job tables: union of columns, nulls where a job lacks one."""
    schema = SCHEMAS[name]
    if not parts:
        return schema.empty_table()
    try:
        table = pa.concat_tables(parts, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        table = pa.concat_tables(_stringify_conflicts(name, parts), promote_options="permissive")
    # One chunk per file makes to_pandas (and nullable dtypes, converted chunk by chunk) slow.
    return _with_fixed_columns(table, schema).combine_chunks()


def _stringify_conflicts(name: str, parts: list[pa.Table]) -> list[pa.Table]:
    """Cast columns whose types cannot be promoted (e.g. int in one job, str in another) to string."""
    types: dict[str, set[pa.DataType]] = {}
    for t in parts:
        for field in t.schema:
            types.setdefault(field.name, set()).add(field.type)
    conflicts = []
    for col, ts in types.items():
        try:
            pa.unify_schemas([pa.schema([(col, t)]) for t in ts], promote_options="permissive")
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            conflicts.append(col)
    log.warning("table %r: columns %s have incompatible types across jobs; loading them as strings",
                name, conflicts)
    out = []
    for t in parts:
        for col in conflicts:
            if col in t.column_names:
                i = t.column_names.index(col)
                t = t.set_column(i, pa.field(col, _S), pc.cast(t.column(i), _S))
        out.append(t)
    return out


def _with_fixed_columns(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """Ensure fixed columns exist (files from older writers may lack some) and come first."""
    for field in schema:
        if field.name not in table.column_names:
            table = table.append_column(field, pa.nulls(len(table), field.type))
    fixed = schema.names
    return table.select(fixed + [c for c in table.column_names if c not in fixed])


def _pandas_type(t: pa.DataType):
    # Nullable pandas dtypes keep ints ints (and bools bools) even when a job lacks the column.
    import pandas as pd

    if pa.types.is_integer(t):
        return pd.Int64Dtype()
    if pa.types.is_boolean(t):
        return pd.BooleanDtype()
    return None  # pyarrow's default mapping: float64, pandas string dtype


def _to_pandas(table: pa.Table) -> pd.DataFrame:
    return table.to_pandas(types_mapper=_pandas_type)

"""Bring measurements taken outside the pipeline into its tables.

    python -m pipeline.ingest trtexec LOG [--times F] [--profile F] [--layers F] [--batch-size N] --out DIR

LOG is what trtexec printed (stdout and stderr, e.g. `trtexec ... 2>&1 | tee run.log`); --times, --profile and
--layers are its --exportTimes, --exportProfile and --exportLayerInfo files. DIR gets `tables/*.parquet` like a
job directory, so `pipeline.results.load(DIR)` (or a load of a parent directory) reads it with everything else:
a `runs` row (backend=trtexec, the settings the log states), the summary trtexec printed, the per-query times
as samples, and per-layer times joined with the layer information. A DIR that already holds tables keeps them,
moved aside to `tables.replaced-<time>/` as a re-run job's are.

A log whose performance summary is missing or cut short is a `failed` row whose error says why (a run profiled
inside its timed loop keeps the per-layer table trtexec printed). A complete summary without trtexec's final
`&&&& PASSED` line (a pasted summary) is accepted, with a note in `benchmark_note`; so is trtexec 7.x's report
(`benchmark_log_format`). A file that several runs were appended to gives its last complete run, with a note.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from pipeline import results
from pipeline.run import job
from pipeline.run.cache import digest
from pipeline.run.job import JobMeta
from stages.trtexec import backend, parse


def trtexec(log_file: Path, times: Path | None = None, profile: Path | None = None, layers: Path | None = None,
            batch_size: int | None = None) -> tuple[dict, dict]:
    """The `runs` row and the other tables (without run_id, as a stage returns them) of one trtexec run."""
    meta = JobMeta()
    try:
        tables, info, log = backend.ingest(parse.read(log_file), parse.read(times), parse.read(profile),
                                           parse.read(layers), batch_size=batch_size)
        status, error = "ok", None
    except backend.NoMeasurement as err:  # what could still be read (a printed per-layer profile) is kept
        tables, info = err.tables, err.info
        log = err.log or parse.parse_log(parse.read(log_file))
        status, error = "failed", f"{log_file}: {err}"
    known = parse.settings(log)
    config = {"trtexec_command": log.command, **{k: v for k, v in known.items() if v is not None},
              "files": {k: str(v) for k, v in (("log", log_file), ("times", times), ("profile", profile),
                                                ("layers", layers)) if v}}
    row = {
        "run_id": meta.run_id, "sweep": None, "job": None, "status": status, "error": error, "backend": "trtexec",
        "model": _model(log.command), "precision": None, "batch_size": batch_size or known["batch_size"],
        "optimization_level": known["optimization_level"], "max_aux_streams": known["max_aux_streams"],
        "warmup_ms": known["warmup_ms"], "min_iterations": known["min_iterations"],
        "overrides": "", "config_hash": digest(config), "config": yaml.safe_dump(config, sort_keys=False),
        "started": log.started.isoformat() if log.started else None,
        "duration_s": known["duration_s"],  # as for a pipeline job: the configured timed duration
        "job_seconds": log.job_seconds,  # None where the log does not say (no or one timestamp, a paste)
        "env_tensorrt": log.version, "env_gpu": known["gpu"], "env_compute_capability": known["compute_capability"],
        "trtexec_precision_flags": known["precision_flags"], "trtexec_tf32": known["tf32"],
        "trtexec_workspace_mb": known["workspace_mb"],
    }
    row.update({f"benchmark_{k}": v for k, v in info.items()})
    return row, tables


def _model(command: str | None) -> str | None:
    """The model's file name from --onnx=... or --loadEngine=..."""
    for arg in (command or "").split():
        for flag in ("--onnx=", "--loadEngine="):
            if arg.startswith(flag):
                return Path(arg[len(flag):]).stem
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.ingest", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="tool", required=True)
    p = sub.add_parser("trtexec", help="a trtexec log and its JSON exports")
    p.add_argument("log", type=Path, help="trtexec's output (stdout and stderr)")
    p.add_argument("--times", type=Path, help="its --exportTimes file")
    p.add_argument("--profile", type=Path, help="its --exportProfile file")
    p.add_argument("--layers", type=Path, help="its --exportLayerInfo file")
    p.add_argument("--batch-size", type=int, help="samples per query (default: from --shapes/--optShapes, else 1)")
    p.add_argument("--out", type=Path, required=True, help="directory to write tables/ into")
    args = parser.parse_args(argv)
    missing = [str(f) for f in (args.log, args.times, args.profile, args.layers) if f and not f.is_file()]
    if missing:
        parser.error(f"no such file: {', '.join(missing)}")
    if args.batch_size is not None and args.batch_size < 1:
        parser.error(f"--batch-size {args.batch_size}: a batch holds one sample at least")
    if args.out.exists() and not args.out.is_dir():
        parser.error(f"--out {args.out}: a file is there; --out names a directory to write tables/ into")
    row, tables = trtexec(args.log, args.times, args.profile, args.layers, args.batch_size)
    try:
        aside = results.set_aside(args.out)  # the same as a job re-run into its directory: never overwritten
        if aside is not None:
            print(f"{args.out} already held tables: moved them aside to {aside}", file=sys.stderr)
        job.write_row_and_tables(args.out, row["run_id"], row, tables)
    except OSError as err:
        print(f"error: --out {args.out}: cannot write the tables there ({job.os_reason(err)})", file=sys.stderr)
        return 2
    if row["status"] != "ok":
        print(f"{row['status']}: {row['error']}", file=sys.stderr)
        return 1
    for note in (row.get("benchmark_note"), row.get("benchmark_layers_note")):
        if note:
            print(f"note: {note}", file=sys.stderr)
    print(f"ingested {args.log} -> {args.out}/tables ({len(tables['summary'])} summary rows, "
          f"{row['benchmark_iterations']} queries, verdict {row['benchmark_verdict']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`python -m pipeline.reproduce RUN_DIR [--out DIR]`: re-run recorded jobs from their resolved configs.

RUN_DIR is one job (outputs/runs/<time>, or one job of a sweep) or a whole sweep directory. Each job is run
again from `config.resolved.yaml` exactly as recorded (the backend included), into a new directory, and
compared with the original: environment differences, config hash, artifact cache outcomes, median latency
ratio and accuracy deltas, and whether the two ran under comparable conditions (pipeline/analysis/comparable.py:
GPU, driver, versions, clocks, power cap, throttling, CPU model and load): a ratio measured under different ones
is printed as "not comparable: <why>", and does not change the exit status.

Before anything runs, every recorded config is checked: trust (pipeline/config/trust.py: no code from outside this
project unless allowed), then the schema, the backend's options and the DAG (one line naming the key). The new run
uses the caller's artifact cache (the CLI's default, or --cache-dir), never the cache.dir the record names.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
from pathlib import Path

import pandas as pd
import yaml

from pipeline import results
from pipeline.analysis import comparable
from pipeline.config import renames, schema, trust
from pipeline.run import job as jobmod
from pipeline.run import plugins, runner
from pipeline.run.spec import JobSpec
from stages.api import StageInputError, Unsupported

TRUST_ENV = "PIPELINE_TRUSTED_TARGETS"  # comma-separated modules (or executables) the user trusts

_METRICS = (("latency", "median", "median latency ms"), ("throughput", "samples_per_s", "samples/s"))
_ACCURACY = ("rel_l2_err", "top1_agreement", "max_abs_err")


def find_jobs(run_dir: Path) -> list[Path]:
    if (run_dir / jobmod.CONFIG_FILE).is_file():
        return [run_dir]
    jobs = sorted((p.parent for p in run_dir.glob(f"*/{jobmod.CONFIG_FILE}")), key=_job_order)
    if not jobs:
        raise FileNotFoundError(f"{run_dir}: no recorded job here (looked for {jobmod.CONFIG_FILE} in it and "
                                f"in its sub-directories); pass a run directory or a sweep directory")
    return jobs


def _job_order(path: Path):
    return (0, int(path.name)) if path.name.isdigit() else (1, path.name)


class Untrusted(Exception):
    pass


class BadRecord(Exception):
    """A recorded config that cannot be read back."""


def read_config(src: Path) -> dict:
    path = src / jobmod.CONFIG_FILE
    try:
        config = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise BadRecord(f"{path}: not valid YAML ({' '.join(str(err).split())})") from None
    if not isinstance(config, dict):
        raise BadRecord(f"{path}: expected a mapping of config keys, got {type(config).__name__}")
    return config


def check_trust(config: dict, src: Path, allowed: tuple[str, ...]) -> None:
    bad = trust.untrusted(config, allowed)
    if bad:
        raise Untrusted(f"{src / jobmod.CONFIG_FILE}: {'; '.join(bad)}: running it would run code from outside "
                        f"this project. If you trust whoever sent this config, pass --trust, or allow the module "
                        f"(or executable) with --allow NAME (or {TRUST_ENV}=NAME,...)")


def check_config(config: dict, src: Path) -> None:
    """BadRecord, one line naming the key, for a recorded config that the schema, its backend's plugin or its
    DAG refuses (a record edited by hand). Run only on a trusted config: it imports the plugin and the stages."""
    try:
        schema.check_types(config)
        schema.check(config)
        job = JobSpec.from_config(config)
        try:
            plugins.check(job.backend)
        except Unsupported:
            return  # cannot run here: the job records that as `unsupported`, as the original run would
        runner.plan(job.dag, job.backend)
    except (schema.ConfigError, StageInputError) as err:
        raise BadRecord(f"{src / jobmod.CONFIG_FILE}: {err}") from None
    except (TypeError, ValueError, KeyError, AttributeError) as err:  # a shape the checks above do not foresee
        raise BadRecord(f"{src / jobmod.CONFIG_FILE}: cannot be checked ({type(err).__name__}: {err})") from None


def default_cache_dir() -> Path:
    """The artifact cache that `python -m pipeline` uses by default (conf/config.yaml's cache.dir)."""
    try:
        from pipeline.config import paths

        return Path(yaml.safe_load((Path(paths.CONF_DIR) / "config.yaml").read_text())["cache"]["dir"])
    except Exception:  # noqa: BLE001 - the schema's default is the same
        return Path(schema.CacheConfig.dir)


def reproduce_job(src: Path, out: Path, allowed: tuple[str, ...] = (), trusted: bool = False,
                  cache_dir: Path | None = None) -> dict:
    recorded = read_config(src)
    config = renames.upgrade(recorded)  # code that moved since, under its new names (pipeline/config/renames.py)
    if not trusted:
        check_trust(config, src, allowed)
    check_config(config, src)
    # the caller's cache, not the recorded one: a config someone sent does not choose where files are written
    config["cache"] = {**config["cache"], "dir": str(cache_dir or default_cache_dir())}
    original = results.load(src)
    row = original.runs.iloc[0].to_dict() if len(original.runs) else {}
    meta = jobmod.JobMeta(sweep=_none(row.get("sweep")), job=_none(row.get("job")),
                          overrides=(row.get("overrides") or "").split())
    meta.identity = jobmod.config_hash(recorded)  # the experiment as recorded, whatever has moved since
    outcome = jobmod.run_job(config, out, meta)
    return compare(row, original, outcome, out)


def compare(old_row: dict, old: results.Results, outcome: jobmod.JobOutcome, out: Path) -> dict:
    new = results.load(out)
    new_row = outcome.row
    env_diff = {k[4:]: (old_row.get(k), new_row.get(k)) for k in sorted(set(old_row) | set(new_row))
                if k.startswith("env_") and _none(old_row.get(k)) != _none(new_row.get(k))}
    metrics = {}
    for metric, stat, label in _METRICS:
        a, b = _stat(old.summary, metric, stat), _stat(new.summary, metric, stat)
        metrics[label] = {"original": a, "new": b, "ratio": (b / a) if a and b else None}
    for metric in _ACCURACY:
        a, b = _acc(old.accuracy, metric), _acc(new.accuracy, metric)
        if a is not None or b is not None:
            metrics[metric] = {"original": a, "new": b, "delta": (b - a) if a is not None and b is not None else None}
    caches = {k[:-6]: new_row[k] for k in new_row if k.endswith("_cache")}
    return {"source": old_row.get("run_id"), "new": outcome.run_id, "out": str(out),
            "status": {"original": old_row.get("status"), "new": outcome.status}, "error": outcome.error,
            "config_hash_same": old_row.get("config_hash") == new_row.get("config_hash"),
            "environment_diff": env_diff, "metrics": metrics, "cache": caches,
            "not_comparable": comparable.differences(old_row, new_row)}


def _none(value):
    """A table cell as plain Python: pandas gives NaN/NA for a missing value and numpy scalars for numbers."""
    if value is None or (pd.api.types.is_scalar(value) and pd.isna(value)):
        return None
    return value.item() if hasattr(value, "item") else value


def _stat(summary, metric: str, stat: str) -> float | None:
    hit = summary[(summary.metric == metric) & (summary.stat == stat)]
    return float(hit["value"].iloc[0]) if len(hit) else None


def _acc(accuracy, metric: str) -> float | None:
    hit = accuracy[accuracy.metric == metric]
    return float(hit["value"].iloc[0]) if len(hit) else None


def render(report: dict) -> str:
    lines = [f"{report['source']} -> {report['new']}  ({report['out']})",
             f"  status: {report['status']['original']} -> {report['status']['new']}   "
             f"config_hash {'same' if report['config_hash_same'] else 'DIFFERS'}   "
             f"cache: {', '.join(f'{k} {v}' for k, v in report['cache'].items())}"]
    if report.get("error"):
        lines.append(f"  error: {report['error']}")
    if report["environment_diff"]:
        lines.append("  environment differs:")
        lines += [f"    {k}: {a} -> {b}" for k, (a, b) in report["environment_diff"].items()]
    else:
        lines.append("  environment: same")
    lines.append(f"  conditions: {comparable.text(report.get('not_comparable') or [])}")
    for label, m in report["metrics"].items():
        extra = (f"ratio {m['ratio']:.3f}" if m.get("ratio") is not None else
                 f"delta {m['delta']:+.3g}" if m.get("delta") is not None else "")
        lines.append(f"  {label:<18} {_f(m['original'])} -> {_f(m['new'])}  {extra}")
    return "\n".join(lines)


def _f(v) -> str:
    return "-" if v is None else f"{v:.4g}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.reproduce", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path, help="a job directory or a sweep directory")
    parser.add_argument("--out", type=Path, help="where to record the new run (default: outputs/reproductions/<time>)")
    parser.add_argument("--trust", action="store_true", help="run `_target_` callables from outside this project")
    parser.add_argument("--allow", action="append", default=[], metavar="MODULE",
                        help=f"trust `_target_` callables under this module (repeatable; also ${TRUST_ENV})")
    parser.add_argument("--cache-dir", type=Path, metavar="DIR",
                        help=f"the artifact cache to use (default: {default_cache_dir()}, as `python -m pipeline`); "
                             f"the recorded cache.dir is never used")
    args = parser.parse_args(argv)
    allowed = tuple(args.allow) + tuple(p for p in os.environ.get(TRUST_ENV, "").split(",") if p)
    try:
        jobs = find_jobs(args.run_dir)
        for src in jobs:  # refuse before anything runs, not halfway through a sweep
            config = renames.upgrade(read_config(src))
            if not args.trust:
                check_trust(config, src, allowed)
            check_config(config, src)
    except (FileNotFoundError, Untrusted, BadRecord) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    out = args.out or Path("outputs/reproductions") / dt.datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    reports = []
    for src in jobs:
        dest = out if len(jobs) == 1 else out / src.name
        report = reproduce_job(src, dest, allowed, trusted=True, cache_dir=args.cache_dir)  # checked above
        reports.append(report)
        print(render(report), flush=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / "reproduction.json").write_text(json.dumps(reports, indent=2, default=str))
    return 1 if any(r["status"]["new"] == "failed" for r in reports) else 0


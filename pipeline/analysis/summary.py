"""The short tables printed at the end of a run or a sweep: median latency, throughput, accuracy, status."""
from __future__ import annotations

import math
from pathlib import Path

_ACCURACY = ("rel_l2_err", "top1_agreement")
_LABELLED = ("top1_accuracy",)  # on labelled data (validate.data); its drop is what select.* judges


def _fmt(value, spec: str) -> str:
    missing = value is None or (isinstance(value, float) and math.isnan(value))
    return "-" if missing else format(value, spec)


def job_summary(outcome, out_dir: Path) -> str:
    row, tables = outcome.row, outcome.tables
    lines = [f"{outcome.status.upper()}: {row['model']} {row['precision']} on {row['backend']}, "
             f"batch {row['batch_size']}  (run {outcome.run_id})"]
    if outcome.error:
        lines.append(f"  {outcome.error}")
    stats = {(r["metric"], r["stat"]): r["value"] for r in tables.get("summary", [])}
    acc = {r["metric"]: r["value"] for r in tables.get("accuracy", []) if r["output"] == _first_output(tables)}
    if stats:
        lines.append(f"  median latency {_fmt(stats.get(('latency', 'median')), '.4f')} ms   "
                     f"p99 {_fmt(stats.get(('latency', 'p99')), '.4f')} ms   "
                     f"throughput {_fmt(stats.get(('throughput', 'samples_per_s')), ',.1f')} samples/s   "
                     f"[{row.get('benchmark_verdict', '?')}, {row.get('benchmark_iterations', '?')} iterations]")
    if acc:
        shown = "   ".join(f"{k} {_fmt(acc.get(k), '.3g')}" for k in _ACCURACY if k in acc)
        lines.append(f"  accuracy vs fp32: {shown}")
    task = {r["metric"]: r for r in tables.get("accuracy", []) if r["metric"].startswith("top1_accuracy")}
    if task:
        samples = task["top1_accuracy"].get("samples")
        lines.append(f"  top-1 accuracy {task['top1_accuracy']['value']:.4f} (fp32 reference "
                     f"{task['top1_accuracy_reference']['value']:.4f}) on {samples} labelled samples")
    lines.append(f"  tables: {out_dir / 'tables'}")
    return "\n".join(lines)


def _first_output(tables: dict) -> str | None:
    rows = tables.get("accuracy", [])
    return rows[0]["output"] if rows else None


def sweep_summary(loaded, sweep_dir: Path) -> str:
    """One line per point: every swept key (pipeline/analysis/sweeps.py swept_values: the model too when models differ),
    status, median latency with its CoV and the benchmark's verdict, throughput, accuracy, error."""
    from pipeline.analysis.sweeps import short_keys, swept_values

    runs = loaded.runs
    missing = "".join(f"\nmissing: {line}" for line in getattr(loaded, "missing_lines", list)())
    if runs.empty:
        return f"sweep {sweep_dir}: no job wrote a runs table" + missing
    runs = runs.sort_values(["job", "started", "run_id"], na_position="last").reset_index(drop=True)
    table = runs[["job"]].copy()
    swept = swept_values(runs)
    short = short_keys(swept.columns)
    for key in swept.columns:
        table[short[key]] = swept[key]
    table["status"] = runs["status"]
    s = loaded.summary
    stat = {key: s[(s.metric == key[0]) & (s.stat == key[1])].drop_duplicates("run_id").set_index("run_id")["value"]
            for key in (("latency", "median"), ("latency", "cov"), ("gpu_compute", "cov"),
                        ("throughput", "samples_per_s"))}
    table["median_ms"] = runs["run_id"].map(stat[("latency", "median")])
    # the headline's spread: GPU compute time where the GPU was timed, else the host latency
    cov = runs["run_id"].map(stat[("gpu_compute", "cov")])
    table["cov%"] = cov.fillna(runs["run_id"].map(stat[("latency", "cov")]))
    table["verdict"] = runs["benchmark_verdict"].fillna("") if "benchmark_verdict" in runs else ""
    table["samples/s"] = runs["run_id"].map(stat[("throughput", "samples_per_s")])
    a = loaded.accuracy
    for metric in _ACCURACY + _LABELLED:
        first = a[a.metric == metric].drop_duplicates("run_id").set_index("run_id")["value"]
        if len(first):
            table[metric] = runs["run_id"].map(first)
    table["error"] = runs["error"].fillna("").str.slice(0, 90)
    counts = runs["status"].value_counts().to_dict()
    head = f"sweep {sweep_dir}: " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
    text = head + "\n" + table.to_string(index=False, formatters=_column_formats(table),
                                         float_format=lambda v: f"{v:.4g}")
    failed = runs[runs["status"] == "failed"]
    if len(failed):
        text += "\nfailures:\n" + "\n".join(f"  job {r.job} [{r.overrides}]: {r.error}" for r in failed.itertuples())
    return text + missing


# One format per column, so its numbers line up and read alike (never 2.131e+04 above 9401).
_FORMATS = {"median_ms": "{:.4f}", "cov%": "{:.2f}", "samples/s": "{:,.0f}", "rel_l2_err": "{:.2e}",
            "top1_agreement": "{:.4f}", "top1_accuracy": "{:.4f}"}


def _column_formats(table) -> dict:
    return {col: (lambda v, spec=spec: _fmt(v, spec[2:-1])) for col, spec in _FORMATS.items() if col in table}


def lost_jobs(sweep_dir: Path) -> list[str]:
    """Jobs of the sweep that started but left no complete tables (killed mid-job, or unable to write)."""
    from pipeline import results

    names = [d.name for d in results.incomplete_jobs(sweep_dir) if d.parent == Path(sweep_dir)]
    return sorted(names, key=lambda n: (not n.isdigit(), int(n) if n.isdigit() else n))

"""The short tables printed at the end of a run or a sweep: median and p99 latency, throughput, accuracy with the
paired interval on its top-1 drop, the task metric and its drop, the samples it rests on, status."""
from __future__ import annotations

import math
from pathlib import Path

_ACCURACY = ("rel_l2_err", "top1_agreement")
_LABELLED = ("top1_accuracy",)  # on labelled data (validate.data); its drop is what select.* judges
_BUILT_IN_TASK = ("top1_accuracy", "top5_accuracy", "mae", "rmse")  # shown by the job summary, not as columns


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
    first = _first_output(tables)
    acc = {r["metric"]: r for r in tables.get("accuracy", []) if r["output"] == first}
    if stats:
        lines.append(f"  median latency {_fmt(stats.get(('latency', 'median')), '.4f')} ms   "
                     f"p99 {_fmt(stats.get(('latency', 'p99')), '.4f')} ms   "
                     f"throughput {_fmt(stats.get(('throughput', 'samples_per_s')), ',.1f')} samples/s   "
                     f"[{row.get('benchmark_verdict', '?')}, {row.get('benchmark_iterations', '?')} iterations]")
    if acc:
        shown = "   ".join(f"{k} {_fmt(acc[k]['value'], '.3g')}" for k in _ACCURACY if k in acc)
        lines.append(f"  accuracy vs fp32 ({first}): {shown}")
    if "top1_accuracy" in acc:
        lines.append(f"  top-1 accuracy {acc['top1_accuracy']['value']:.4f} (fp32 reference "
                     f"{acc['top1_accuracy_reference']['value']:.4f}) on {acc['top1_accuracy'].get('samples')} "
                     f"labelled samples{_interval_text(acc, _confidence(row))}")
    for name in ("r2", "mae", "rmse", *_user_metrics(acc)):
        if name in acc:
            lines.append(f"  {name} {acc[name]['value']:.4g} (fp32 reference {acc[f'{name}_reference']['value']:.4g}, "
                         f"drop {acc[f'{name}_drop']['value']:.3g}) on {acc[name].get('samples')} labelled samples")
    lines.append(f"  tables: {out_dir / 'tables'}")
    return "\n".join(lines)


def _interval_text(acc: dict, confidence: float) -> str:
    """': drop 0.000 [0.000, 0.000] at 95 %, McNemar p 1' from the paired counts; '' without them."""
    from pipeline.analysis import paired, select

    n = acc["top1_accuracy"].get("samples")
    if not n or select.RUN_ONLY not in acc or select.REFERENCE_ONLY not in acc:
        return ""
    drop = paired.drop(int(n), int(acc[select.RUN_ONLY]["value"]), int(acc[select.REFERENCE_ONLY]["value"]),
                       confidence)
    return f": {drop.text()}, McNemar p {drop.p_value:.2g}"


def _confidence(row: dict) -> float:
    """select.confidence of the run's recorded config (the default where it has none, or a bad one)."""
    from pipeline.analysis import select

    try:
        return select.recorded_rule(str(row.get("config") or "")).confidence
    except (select.SelectError, ValueError, TypeError):
        return select.Rule.confidence


def _user_metrics(acc: dict) -> list[str]:
    """The task metrics besides the built-in ones (validate.metric's), by their name."""
    return [m[:-5] for m in acc if m.endswith("_drop") and m[:-5] not in (*_BUILT_IN_TASK, "r2")]


def _first_output(tables: dict) -> str | None:
    rows = tables.get("accuracy", [])
    return rows[0]["output"] if rows else None


def sweep_summary(loaded, sweep_dir: Path) -> str:
    """One line per point: every swept key (pipeline/analysis/sweeps.py swept_values: the model too when models differ),
    status, median and p99 latency with the CoV and the benchmark's verdict, throughput, accuracy (the top-1 drop
    with its paired interval, the task metric and its drop) and the samples it rests on, error."""
    from pipeline.analysis import select
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
            for key in (("latency", "median"), ("latency", "p99"), ("latency", "cov"), ("gpu_compute", "cov"),
                        ("throughput", "samples_per_s"))}
    table["median_ms"] = runs["run_id"].map(stat[("latency", "median")])
    table["p99_ms"] = runs["run_id"].map(stat[("latency", "p99")])
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
    try:
        rule = select.rule_of(runs)
    except select.SelectError:  # the sweeps loaded together disagree: the defaults, for the table only
        rule = select.Rule()
    judged = {p.run_id: p for p in select.points(loaded, rule)} if len(a) else {}
    if any(p.interval is not None for p in judged.values()):
        table[f"top1_drop[{rule.confidence * 100:g}%]"] = runs["run_id"].map(lambda r: drop_cell(judged.get(r)))
    for name in task_columns(a, rule):
        for metric in (name, f"{name}_drop"):
            table[metric] = runs["run_id"].map(a[a.metric == metric].drop_duplicates("run_id").set_index("run_id")
                                               ["value"])
    if len(a):
        table["samples"] = runs["run_id"].map(a.drop_duplicates("run_id").set_index("run_id")["samples"].astype(float))
    table["error"] = runs["error"].fillna("").str.slice(0, 90)
    counts = runs["status"].value_counts().to_dict()
    head = f"sweep {sweep_dir}: " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
    text = head + "\n" + table.to_string(index=False, formatters=_column_formats(table), na_rep="-",
                                         float_format=lambda v: f"{v:.4g}")
    failed = runs[runs["status"] == "failed"]
    if len(failed):
        text += "\nfailures:\n" + "\n".join(f"  job {r.job} [{r.overrides}]: {r.error}" for r in failed.itertuples())
    return text + missing


def drop_cell(point) -> str:
    """'0.002 [-0.001, 0.006]', or '-'."""
    if point is None or point.interval is None:
        return "-"
    d = point.interval
    return f"{d.value:.3f} [{d.low:.3f}, {d.high:.3f}]"


def task_columns(accuracy, rule) -> list[str]:
    """The task metrics shown with their drop: select.accuracy's, r2 (float labels) and the user's validate.metric."""
    names = list(dict.fromkeys(m[:-5] for m in accuracy["metric"] if m.endswith("_drop")))
    chosen = [rule.accuracy[5:]] if rule.accuracy.startswith("task/") else []
    return [n for n in dict.fromkeys(chosen + names) if n in names and (n in chosen or n not in _BUILT_IN_TASK)]


# One format per column, so its numbers line up and read alike (never 2.131e+04 above 9401).
_FORMATS = {"median_ms": "{:.4f}", "p99_ms": "{:.4f}", "cov%": "{:.2f}", "samples/s": "{:,.0f}",
            "rel_l2_err": "{:.2e}", "top1_agreement": "{:.4f}", "top1_accuracy": "{:.4f}", "samples": "{:,.0f}"}


def _column_formats(table) -> dict:
    return {col: (lambda v, spec=spec: _fmt(v, spec[2:-1])) for col, spec in _FORMATS.items() if col in table}


def lost_jobs(sweep_dir: Path) -> list[str]:
    """Jobs of the sweep that started but left no complete tables (killed mid-job, or unable to write)."""
    from pipeline import results

    names = [d.name for d in results.incomplete_jobs(sweep_dir) if d.parent == Path(sweep_dir)]
    return sorted(names, key=lambda n: (not n.isdigit(), int(n) if n.isdigit() else n))

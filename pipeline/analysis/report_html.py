"""The report's HTML page: one file, inline CSS, images referenced by file name beside it, no scripts."""
from __future__ import annotations

import datetime as dt
from html import escape
from pathlib import Path

import pandas as pd

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1400px; padding: 0 1em; color: #1a202c; }
h1 { margin-bottom: 0.2em; } h2 { margin-top: 1.8em; border-bottom: 1px solid #e2e8f0; }
.meta, .caption { color: #4a5568; } .note { color: #744210; background: #fefcbf; padding: 0.4em 0.8em; }
.alert { color: #742a2a; background: #fed7d7; padding: 0.6em 1em; font-weight: 600; }
img { max-width: 100%; border: 1px solid #e2e8f0; }
table { border-collapse: collapse; font-size: 0.85em; } th, td { border: 1px solid #cbd5e0; padding: 0.25em 0.5em; }
th { background: #edf2f7; text-align: left; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.error { max-width: 48em; white-space: pre-wrap; word-break: break-word; }
.ok { background: #c6f6d5; } .failed { background: #fed7d7; } .unsupported { background: #feebc8; }
.best { color: #22543d; background: #f0fff4; border-left: 4px solid #38a169; padding: 0.4em 0.8em; }
tr.selected td { font-weight: 600; }
"""
# (header, view column, number format or None for text)
_RUN_COLUMNS = (
    ("median (ms)", "median", ".4g"), ("p90 (ms)", "p90", ".4g"), ("p99 (ms)", "p99", ".4g"),
    ("throughput (samples/s)", "throughput", ",.1f"), ("rel_l2_err", "rel_l2_err", ".3g"),
    ("top1_agreement", "top1_agreement", ".3g"), ("top-1 accuracy", "top1_accuracy", ".4g"),
    ("top-1 drop [interval]", "top1_interval", None), ("samples", "samples", ",.0f"),
    ("accuracy bound that decided", "decided", None), ("verdict", "benchmark_verdict", None),
)


_LABELLED = ("top1_accuracy", "top1_interval")


def page(path: Path, view: pd.DataFrame, axes: list[str], sections: list, loaded,
         best_lines: list[str] | tuple = ()) -> str:
    """The whole page; `best_lines`: each sweep's recorded choice of the build to ship (selection.json)."""
    name = _name(path, view)
    counts = view["status"].value_counts()
    tally = ", ".join(f"{n} {status}" for status, n in counts.items()) or "none"
    head = [f"<h1>Report: {escape(name)}</h1>",
            f'<p class="meta">{escape(str(path.resolve()))}<br>{len(view)} runs: {escape(tally)}. '
            f"Swept: {escape(', '.join(axes) or 'nothing (a single configuration)')}. "
            f"Generated {dt.datetime.now().isoformat(timespec='seconds')}.</p>"]
    if not counts.get("ok", 0):
        head.append(f'<p class="alert">No run succeeded: nothing to plot. All {len(view)} runs are listed '
                    f"below with their status and error.</p>")
    head += [f'<p class="best">{escape(line)}</p>' for line in best_lines]
    body = [_section(s) for s in sections]
    body += ["<h2>All runs</h2>", _runs_table(view, axes), "<h2>Environment</h2>", _environment(view)]
    if loaded.skipped:
        items = "".join(f"<li>{escape(str(f))}: {escape(err)}</li>" for f, err in loaded.skipped)
        body.append(f'<h2>Skipped or missing (unreadable files, incomplete jobs, points without a row)</h2>'
                    f'<ul class="note">{items}</ul>')
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>Report: {escape(name)}</title><style>{_CSS}</style></head>\n<body>\n"
            + "\n".join(head + body) + "\n</body></html>\n")


def _name(path: Path, view: pd.DataFrame) -> str:
    """'precision sweep 2026-11-21_10-00-00' when every run belongs to one sweep, else the directory's name."""
    sweeps = view["sweep"].dropna().unique()
    folder = path.resolve().name
    if folder.isdigit():  # one job of a sweep: say which sweep run it belongs to
        folder = f"{path.resolve().parent.name}/{folder}"
    return f"{sweeps[0]} sweep {folder}" if len(sweeps) == 1 else folder


def _section(section) -> str:
    parts = [f"<h2>{escape(section.title)}</h2>"]
    if section.image:
        parts.append(f'<p class="caption">{escape(section.caption)}</p>')
        parts.append(f'<img src="{escape(section.image)}" alt="{escape(section.title)}">')
    else:
        parts.append(f'<p class="{"caption" if getattr(section, "table", None) else "note"}">'
                     f'{escape(section.caption)}</p>')
    if getattr(section, "table", None):
        parts.append(section.table)
    return "\n".join(parts)


def costs_table(costs: pd.DataFrame) -> str:
    """The costs per run (pipeline.analysis.report.cost_view): numbers right-aligned, '-' where a run has none."""
    header = "".join(f"<th>{escape(str(c))}</th>" for c in ["point", *costs.columns[1:]])
    rows = []
    for _, run in costs.iterrows():
        cells = [f"<td>{escape(str(run['label']))}</td>",
                 f'<td class="{escape(str(run["status"]))}">{escape(str(run["status"]))}</td>']
        for column in costs.columns[2:]:
            value = run[column]
            numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
            cells.append(_cell(value, _number_format(column)) if numeric or value is None else
                         f"<td>{escape(_text(value))}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f'<table class="costs"><tr>{header}</tr>\n' + "\n".join(rows) + "</table>"


def _number_format(column: str) -> str:
    if "MiB" in column:
        return ",.1f"
    if "(W)" in column:
        return ",.0f"
    return ".3g" if "/ J" in column or "mJ" in column else ".4g"


def _runs_table(view: pd.DataFrame, axes: list[str]) -> str:
    if view.empty:
        return '<p class="note">No runs.</p>'
    # the top-1 columns exist only with labelled data (validate.data): shown where some run has them
    columns = [c for c in _RUN_COLUMNS if c[1] in view and (c[1] not in _LABELLED or _shown(view[c[1]]))]
    confidence = view.attrs.get("confidence")
    columns = [(f"top-1 drop [{confidence * 100:g} % interval]" if col == "top1_interval" and confidence else h, col,
                fmt) for h, col, fmt in columns]
    tasks = [(c[5:].replace("_drop", " drop"), c, ".4g") for c in view.columns if c.startswith("task:")]
    at = next((i for i, c in enumerate(columns) if c[1] == "samples"), len(columns))
    columns[at:at] = tasks  # the task metric and its drop before the sample count
    sweeps = "sweep_label" in view and (view["sweep_label"] != "").any()
    header = ["job", *(["sweep"] if sweeps else []), "point", "status", *(h for h, _, _ in columns), "error",
              "run_id"]
    rows = []
    for _, run in view.iterrows():
        status = str(run["status"])
        chosen = bool(run.get("selected")) if pd.notna(run.get("selected")) else False
        named = escape(str(run["label"])) + (" <strong>&#9733; selected</strong>" if chosen else "")
        cells = [_cell(run["job"], "d"), *([f"<td>{escape(str(run['sweep_label']))}</td>"] if sweeps else []),
                 f"<td>{named}</td>",
                 f'<td class="{escape(status)}">{escape(status)}</td>',
                 *(_cell(run[col], fmt) for _, col, fmt in columns),
                 f'<td class="error">{escape(_text(run["error"]))}</td>', f"<td>{escape(str(run['run_id']))}</td>"]
        rows.append(("<tr class=\"selected\">" if chosen else "<tr>") + "".join(cells) + "</tr>")
    ths = "".join(f"<th>{escape(h)}</th>" for h in header)
    point = f"point = {', '.join(axes)}" if axes else "point = precision"
    return f'<p class="caption">{escape(point)}</p><table><tr>{ths}</tr>\n' + "\n".join(rows) + "</table>"


def _shown(column: pd.Series) -> bool:
    """Some run has a value ('-' is none)."""
    return bool((column.notna() & (column.astype(str) != "-")).any())


def _cell(value, fmt: str | None) -> str:
    if fmt is None:
        return f"<td>{escape(_text(value))}</td>"
    if value is None or pd.isna(value):
        return '<td class="num">-</td>'
    return f'<td class="num">{format(value, fmt)}</td>'


def _text(value) -> str:
    return "" if value is None or (not isinstance(value, str) and pd.isna(value)) else str(value)


def _environment(view: pd.DataFrame) -> str:
    """Each env_* column with its distinct values: one value is the normal case, several deserve a look."""
    env = [c for c in view.columns if c.startswith("env_")]
    if not env:
        return '<p class="note">No environment recorded.</p>'
    rows = "".join(f"<tr><th>{escape(c[4:])}</th><td>{escape(' | '.join(map(str, view[c].dropna().unique())))}"
                   f"</td></tr>" for c in env)
    return f"<table>{rows}</table>"

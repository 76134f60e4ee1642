"""`python -m pipeline.report PATH [--out DIR]`: an HTML report with plots of a run or a sweep directory.

The report is a folder, `index.html` with its PNGs beside it (default `PATH/report/`): it opens from disk or
a CI artifact with no network. Every run is listed with its status and error; a point that failed or is
unsupported is never dropped silently: each plot says how many points it leaves out and why.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline import results
from pipeline.analysis import report_html
from pipeline.analysis.sweeps import swept_values

# pipeline.analysis.plots (matplotlib) is imported where a plot is drawn: a report without plots does not pay for it.

IMAGES = ("latency.png", "accuracy.png", "distribution.png", "layers.png", "gpu.png", "costs.png")
# axes whose values name themselves in a label ("int8", not "precision=int8")
_NAMED = ("model", "backend", "precision")
TOP_LAYERS = 12
# runs columns saying a run's per-layer times overlap (layers on several streams), from its profile or benchmark
OVERLAP_COLUMNS = ("profile_layers_overlap", "benchmark_layers_overlap")
BASELINE = "fp32"
# the first output's accuracy columns of the view; top-1 ones come from labelled data (see pipeline/analysis/select.py)
ACCURACY = ("rel_l2_err", "top1_agreement", "top1_accuracy", "top1_accuracy_drop")


@dataclass
class Section:
    title: str
    caption: str             # plain text; the HTML escapes it
    image: str | None = None  # file name beside index.html; None: the caption says why there is no plot
    table: str | None = None  # an HTML table (already escaped) under the caption


def build_report(path: str | Path, out: str | Path | None = None, loaded: results.Results | None = None) -> Path:
    """Write the report of the run or sweep at `path` into `out` (default `path/report`); return index.html."""
    path = Path(path)
    loaded = loaded or results.load(path)
    if loaded.runs.empty:  # as select and compare say: an empty report would pass for a sweep with nothing in it
        raise FileNotFoundError(f"{path}: no results (no tables/runs.parquet below it); pass a run, a sweep or an "
                                f"outputs directory")
    out = Path(out) if out is not None else path / "report"
    out.mkdir(parents=True, exist_ok=True)
    for name in IMAGES:  # a re-run must not leave a plot the new index no longer describes
        (out / name).unlink(missing_ok=True)
    sweeps = sweep_dirs(path)
    view, swept = run_view(loaded, sweeps.by_run)
    axes = list(swept.columns)
    sections = [_latency(view, axes, out), _accuracy(view, out), _distribution(view, loaded.samples, out),
                _layers(view, swept, loaded.layers, out), _gpu(view, loaded.gpu, out), _costs(view, loaded, out)]
    from pipeline.analysis import plan_report  # the precision planner's sections, where a run compared layers

    sections += [Section(*s) for s in plan_report.sections(path, loaded.layer_errors, loaded.runs, out)]
    index = out / "index.html"
    index.write_text(report_html.page(path, view, axes, sections, loaded, sweeps.lines), encoding="utf-8")
    return index


@dataclass
class Sweeps:
    by_run: dict[str, str] = field(default_factory=dict)  # run_id -> its sweep directory (a single run: its own)
    lines: list[str] = field(default_factory=list)       # each sweep's "best: ..." line (its selection.json)


def sweep_dirs(path: Path) -> Sweeps:
    """Which sweep directory each run below `path` belongs to, and the sweeps' recorded choices.

    A job of a sweep (a runs row with a `sweep`) lives in <sweep dir>/<job>/; a single run is its own directory."""
    import pyarrow.parquet as pq

    selections: list[str] = []
    found, _ = results._find(Path(path), ("runs",), selections)
    sweeps = Sweeps()
    for f in found["runs"]:
        try:
            table = pq.read_table(f, columns=["run_id", "sweep"]).to_pydict()
        except Exception:  # noqa: BLE001 - load() has already reported an unreadable file
            continue
        job_dir = Path(f).parent.parent
        for run_id, sweep in zip(table["run_id"], table["sweep"]):
            sweeps.by_run[run_id] = str(job_dir.parent if sweep else job_dir)
    for f in sorted(results._sweep_selection(Path(path), selections)):
        try:
            sweeps.lines += str(json.loads(Path(f).read_text(encoding="utf-8"))["line"]).splitlines()
        except (OSError, ValueError, KeyError, TypeError):
            continue  # load() lists an unreadable selection file among the skipped ones
    return sweeps


# --------------------------------------------------------------------------- one row per run


def run_view(loaded: results.Results, sweep_of: dict[str, str] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """`runs` in sweep order with a short `label` per run and its headline numbers; the swept values
    (swept_values(), on the same index). `sweep_of` (run_id -> sweep directory, see sweep_dirs()) keeps the
    points of several sweeps apart: with more than one, each label says its sweep (column `sweep_label`)."""
    runs = loaded.runs.sort_values(["job", "started", "run_id"], na_position="last").reset_index(drop=True)
    values = swept_values(runs)
    tags = _sweep_tags(runs, sweep_of or {})
    if tags is not None:  # several sweeps: each in its own order, one after the other (oldest first)
        first = runs.groupby(tags, sort=False)["started"].transform("min")
        order = pd.DataFrame({"first": first, "tag": tags, "i": range(len(runs))})
        keep = order.sort_values(["first", "tag", "i"], na_position="last").index
        runs, values, tags = runs.loc[keep].reset_index(drop=True), values.loc[keep].reset_index(drop=True), \
            tags.loc[keep].reset_index(drop=True)
    view = runs.assign(label=_labels(runs, values, tags))
    view["sweep_label"] = tags if tags is not None else ""
    if "selected" not in view:  # runs loaded without selection columns (an older Results)
        view["selected"] = False
    s = loaded.summary
    latency = s[s["metric"] == "latency"].pivot_table(index="run_id", columns="stat", values="value", aggfunc="first")
    numbers = {stat: latency[stat] if stat in latency else None for stat in ("median", "p90", "p99")}
    numbers["throughput"] = _one(s, "throughput", "samples_per_s")
    numbers.update({metric: _one(loaded.accuracy, metric) for metric in ACCURACY})
    samples = loaded.accuracy.drop_duplicates("run_id").set_index("run_id")["samples"]
    numbers["samples"] = samples if len(samples) else None
    for column, by_run in numbers.items():  # float even when empty: no run, or none measured
        view[column] = np.nan if by_run is None else view["run_id"].map(by_run).astype(float)
    return _with_judgement(view, loaded), values


def _with_judgement(view: pd.DataFrame, loaded: results.Results) -> pd.DataFrame:
    """The view with what selection sees per run (pipeline/analysis/select.py): `top1_interval` (the paired
    interval on the top-1 drop, as text), `decided` (which accuracy bound decided), `noise` (percent) and
    `task:<name>` / `task:<name>_drop` for each task metric shown (pipeline/analysis/summary.py task_columns)."""
    from pipeline.analysis import select, summary

    try:
        rule = select.rule_of(view)
    except select.SelectError:  # several sweeps that disagree on select.*: the defaults, for the view only
        rule = select.Rule()
    judged = {p.run_id: p for p in select.points(loaded, rule)} if len(loaded.runs) else {}
    view["noise"] = view["run_id"].map(lambda r: judged[r].noise.pct if r in judged and judged[r].noise else np.nan)
    view["top1_interval"] = view["run_id"].map(lambda r: summary.drop_cell(judged.get(r)))
    view["decided"] = view["run_id"].map(lambda r: judged[r].decided if r in judged else "")
    view.attrs["confidence"] = rule.confidence
    a = loaded.accuracy
    for name in summary.task_columns(a, rule):
        for metric in (name, f"{name}_drop"):
            view[f"task:{metric}"] = view["run_id"].map(_one(a, metric)).astype(float)
    return view


def _one(table: pd.DataFrame, metric: str, stat: str | None = None) -> pd.Series:
    """run_id -> the first value of `metric` (and `stat`): the first output's, as the printed summary shows."""
    rows = table[table["metric"] == metric]
    if stat is not None:
        rows = rows[rows["stat"] == stat]
    return rows.drop_duplicates("run_id").set_index("run_id")["value"]


def _sweep_tags(runs: pd.DataFrame, sweep_of: dict[str, str]) -> pd.Series | None:
    """Per run, the shortest name that tells its sweep apart ('precision 2026-11-21_10-00-00'); None with one."""
    dirs = runs["run_id"].map(sweep_of).fillna("")
    if dirs.nunique() < 2:
        return None
    names = {d: Path(d).name for d in dirs.unique()}
    sweep = runs.groupby(dirs, sort=False)["sweep"].first()
    tags = {d: " ".join(str(x) for x in (sweep.get(d), names[d]) if x is not None and not pd.isna(x) and x != "")
            for d in names}
    if len(set(tags.values())) < len(tags):  # the same sweep at the same second in two places: say where
        tags = {d: d for d in names}
    return dirs.map(tags)


def _labels(runs: pd.DataFrame, values: pd.DataFrame, tags: pd.Series | None = None) -> list[str]:
    if values.columns.empty:
        labels = [str(p) for p in runs["precision"]]
    elif len(values.columns) == 1:
        labels = list(values.iloc[:, 0])
    else:
        labels = [" ".join(v if k in _NAMED else f"{k.rsplit('.', 1)[-1]}={v}" for k, v in row.items())
                  for _, row in values.iterrows()]
    if tags is not None:
        labels = [f"{lab} ({tag})" for lab, tag in zip(labels, tags)]
    seen = pd.Series(labels).duplicated(keep=False)
    where = [f"#{job}" if pd.notna(job) else run_id for job, run_id in zip(runs["job"], runs["run_id"])]
    return [f"{lab} {at}" if dup else lab for lab, dup, at in zip(labels, seen, where)]


def _left_out(view: pd.DataFrame, shown: pd.Series, what: str) -> str | None:
    """'2 points not shown: unsupported: bf16; failed: int8' (None when every run is shown)."""
    hidden = view[~shown]
    if hidden.empty:
        return None
    reasons = hidden["status"].where(hidden["status"] != "ok", f"ok, no {what}")
    groups = "; ".join(f"{reason}: {', '.join(hidden['label'][reasons == reason])}" for reason in reasons.unique())
    return f"{len(hidden)} point{'s' if len(hidden) > 1 else ''} not shown: {groups}"


def _nothing(title: str, view: pd.DataFrame, shown: pd.Series, what: str) -> Section:
    why = _left_out(view, shown, what) or "no runs"
    return Section(title, f"Nothing to plot: no run has {what}. {why}.")


# --------------------------------------------------------------------------- sections


def _latency(view: pd.DataFrame, axes: list[str], out: Path) -> Section:
    title = "Latency and throughput"
    shown = (view["status"] == "ok") & view["median"].notna()
    if not shown.any():
        return _nothing(title, view, shown, "latency results")
    note = _left_out(view, shown, "latency results")
    from pipeline.analysis import plots

    plots.latency_throughput(view[shown], ", ".join(axes) or "run", out / IMAGES[0], note)
    return Section(title, "Median latency per batch with p90 and p99 (ms), and throughput (samples/s), per "
                          "swept value. " + (note or ""), IMAGES[0])


def _accuracy(view: pd.DataFrame, out: Path) -> Section:
    title = "Accuracy against latency"
    if view["top1_accuracy_drop"].notna().any():  # labelled data: what the user ships on
        error, label = view["top1_accuracy_drop"], "top-1 accuracy drop vs fp32 reference (labelled data)"
    elif view["rel_l2_err"].notna().any():
        error, label = view["rel_l2_err"], "relative L2 error vs fp32 reference"
    else:
        error, label = 1.0 - view["top1_agreement"], "top-1 disagreement with fp32 reference (fraction)"
    shown = (view["status"] == "ok") & view["median"].notna() & error.notna()
    if not shown.any():
        return _nothing(title, view, shown, "both latency and accuracy results")
    note = _left_out(view, shown, "accuracy results")
    points = view[shown].assign(error=error[shown])
    from pipeline.analysis import plots

    plots.accuracy_latency(points, label, out / IMAGES[1], note)
    front = points["label"][plots.pareto_mask(points["median"].to_numpy(), points["error"].to_numpy(),
                                              points["noise"].to_numpy())]
    chosen = points["label"][points["selected"].fillna(False).astype(bool)]
    marked = (f"The star marks the selected build (the fastest within the accuracy bounds of select.*, one per "
              f"workload): {', '.join(chosen)}. " if len(chosen) else "")
    noise = points["noise"].dropna()
    ties = (f"Latencies closer than their noise (up to ±{noise.max():.2g} %) count as ties: a point is never left "
            f"off the front by a difference within the noise. " if len(noise) else "")
    return Section(title, f"{label[0].upper()}{label[1:]} against median latency. Pareto front (no other point "
                          f"is both faster and more accurate): {', '.join(front)}. " + ties + marked + (note or ""),
                   IMAGES[1])


def _distribution(view: pd.DataFrame, samples: pd.DataFrame, out: Path) -> Section:
    title = "Latency distribution"
    latency = samples[samples["metric"] == "latency"]
    per_run = {rid: g["value_ms"].to_numpy() for rid, g in latency.groupby("run_id", sort=False)}
    shown = view["run_id"].isin(per_run.keys())
    if not shown.any():
        return _nothing(title, view, shown, "latency samples")
    note = _left_out(view, shown, "latency samples")
    from pipeline.analysis import plots

    plots.distributions({r.label: per_run[r.run_id] for r in view[shown].itertuples()}, out / IMAGES[2], note)
    return Section(title, "Every timed iteration of each run. " + (note or ""), IMAGES[2])


def _layers(view: pd.DataFrame, swept: pd.DataFrame, layers: pd.DataFrame, out: Path) -> Section:
    title = "Top layers by time"
    profiled = view[view["run_id"].isin(set(layers["run_id"])) & (view["status"] == "ok")]
    if profiled.empty:
        return Section(title, "No layer rows: no run was profiled (profile.enabled=false, or the backend has "
                              "no profile stage).")
    fastest = profiled.sort_values("median", na_position="last").iloc[0]
    baseline = _baseline(profiled, fastest, swept)
    picks = [(f"fastest: {fastest.label} ({fastest['median']:.3g} ms median)", fastest)]
    if baseline is None:
        caption = f"No profiled {BASELINE} run to compare with. "
    elif baseline.run_id == fastest.run_id:
        picks = [(f"fastest run is the {BASELINE} baseline: {fastest.label}", fastest)]
        caption = ""
    else:
        picks.append((f"{BASELINE} baseline: {baseline.label} ({baseline['median']:.3g} ms median)", baseline))
        caption = ""
    panels = []
    for heading, run in picks:
        rows = layers[layers["run_id"] == run.run_id]
        rows = rows[rows["source"] == rows["source"].iloc[0]]  # one profiler's view per panel
        rows = rows[rows["layer_type"] != "module"] if (rows["layer_type"] != "module").any() else rows
        # (module rows are inclusive ranges over the operator rows: one or the other, never mixed)
        panels.append((f"{heading}\n{rows['source'].iloc[0]}", rows.nlargest(TOP_LAYERS, "time_ms")))
    from pipeline.analysis import plots

    plots.top_layers(panels, out / IMAGES[3])
    overlapping = [label for c in OVERLAP_COLUMNS if c in profiled for label in profiled["label"][profiled[c].eq(True)]]
    if overlapping:
        caption += (f"Per-layer times overlap across auxiliary streams in {', '.join(overlapping)}: layers ran at "
                    "the same time, so their shares do not add up to the inference time. ")
    return Section(title, caption + f"The {TOP_LAYERS} slowest layers per inference, with their share of all "
                   "profiled layer time. Profiled in a session of its own with the profiler on: absolute times "
                   "run above the benchmark's, the shares are what to compare.", IMAGES[3])


def _baseline(profiled: pd.DataFrame, fastest: pd.Series, swept: pd.DataFrame):
    """The fp32 run that differs from the fastest run in the fewest other swept values (the same batch size,
    say), so that the comparison shows what the precision changed."""
    candidates = profiled[profiled["precision"] == BASELINE]
    if candidates.empty:
        return None
    others = swept.drop(columns=["precision"], errors="ignore")
    mismatches = (others.loc[candidates.index] != others.loc[fastest.name]).sum(axis=1)
    return candidates.loc[mismatches.sort_values(kind="stable").index[0]]


def _gpu(view: pd.DataFrame, gpu: pd.DataFrame, out: Path) -> Section:
    title = "GPU clocks and temperature"
    gpu = gpu.dropna(subset=["sm_clock_mhz", "temp_c"], how="all")
    if gpu.empty:
        return Section(title, "No GPU samples (a CPU run, or no GPU monitoring during the measurement).")
    labels = view.set_index("run_id")["label"]
    series = {labels.get(rid, rid): g for rid, g in gpu.groupby("run_id", sort=False)}
    shown = view["run_id"].isin(set(gpu["run_id"]))
    note = _left_out(view, shown, "GPU samples")
    from pipeline.analysis import plots

    plots.gpu_timeline(series, out / IMAGES[4], note)
    return Section(title, "SM clock (MHz) and temperature (°C) sampled during each measurement: a falling "
                          "clock means a throttled result. " + (note or ""), IMAGES[4])


# The costs table: (header, summary metric, stat) per column; shown where some run has it (stages/gpu/costs.py)
COST_ROWS = (
    ("peak GPU memory, timed (MiB)", "gpu_memory", "peak_timed"),
    ("peak GPU memory, build (MiB)", "gpu_memory", "peak_build"),
    ("weights in memory (MiB)", "gpu_memory", "weights"),
    ("weights file (MiB)", "artifact", "weights_file"),
    ("engine (MiB)", "artifact", "engine"),
    ("ONNX export (MiB)", "artifact", "onnx_export"),
    ("energy / inference (mJ)", "energy", "per_inference"),
    ("energy / sample (mJ)", "energy", "per_sample"),
    ("inferences / J", "energy", "inferences_per_joule"),
    ("mean power, timed (W)", "power", "mean_timed"),
    ("power cap (W)", "power", "cap"),
)
# runs columns of the costs table: (header, column), the build's stages first
COST_COLUMNS = (("throttled while timing", "benchmark_timed_throttle_reasons"),
                ("compile first call (s)", "compile_first_call_s"), ("compile cache", "compile_inductor_cache"),
                ("quantization", "compile_quantization"))
MEASURING = ("benchmark", "validate", "profile")  # stages that measure: every other stage's time is the build's


def cost_view(view: pd.DataFrame, summary: pd.DataFrame) -> pd.DataFrame:
    """Per run (view's order): its label and status, each cost metric it has, its build time (the seconds of its
    stages that are not measurements: export, convert, build, model, compile; their work, not the imports beside it
    in `<stage>_import_seconds`; cache hits take about none), and the runs columns above. Only columns that some run
    has."""
    out = pd.DataFrame({"label": view["label"], "status": view["status"]})
    for header, metric, stat in COST_ROWS:
        values = _one(summary, metric, stat) if len(summary) else pd.Series(dtype=float)
        column = view["run_id"].map(values).astype(float)
        if column.notna().any():
            out[header] = column
    stages = [c for c in view.columns if c.endswith("_seconds") and c != "job_seconds"
              and not c.endswith("_import_seconds") and c.removesuffix("_seconds") not in MEASURING]
    if stages:
        out["build time (s)"] = view[stages].astype(float).sum(axis=1, min_count=1)
    for header, column in COST_COLUMNS:
        if column in view and view[column].notna().any():
            out[header] = view[column]
    return out


def _costs(view: pd.DataFrame, loaded: results.Results, out: Path) -> Section:
    title = "Costs beyond latency"
    costs = cost_view(view, loaded.summary)
    measured = [c for c in costs.columns if c not in ("label", "status")]
    if view.empty or not measured:
        return Section(title, "No cost figures: no run recorded memory, artifact sizes, energy or build times.")
    table = report_html.costs_table(costs)
    energy, memory = "energy / sample (mJ)", "peak GPU memory, timed (MiB)"
    plotted = [c for c in (energy, memory) if c in costs]
    caption = ("What each build costs besides its latency: GPU memory at its peak while timing and while building, "
               "the size of its weights and artifacts, the energy of the timed loop from NVML's energy counter (the "
               "whole GPU's draw, idle power included) with the power cap and the throttle reasons seen while "
               "timing, and the build time (the work of every stage that is not a measurement, the libraries it "
               "imports left out; a cache hit costs about none). ")
    if not plotted:
        return Section(title, caption + "No run measured energy or GPU memory (a CPU run): no plot.", table=table)
    shown = costs[plotted].notna().any(axis=1) & (costs["status"] == "ok")
    note = _left_out(view, shown, "energy or GPU memory figures")
    from pipeline.analysis import plots

    plots.costs(costs[shown], plotted, out / IMAGES[5], note)
    return Section(title, caption + (note or ""), IMAGES[5], table=table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("path", type=Path, help="a job directory, a sweep directory or an outputs root")
    parser.add_argument("--out", type=Path, help="where to write index.html and its images (default: PATH/report)")
    args = parser.parse_args(argv)
    try:
        loaded = results.load(args.path) if args.path.exists() else None
        index = build_report(args.path, args.out, loaded)
    except (FileNotFoundError, NotADirectoryError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"report: {index}")
    for line in loaded.missing_lines():  # the report shows the points there are, and says so on its page
        print(f"missing: {line}", file=sys.stderr)
    return 1 if loaded.missing else 0


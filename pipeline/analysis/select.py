"""The build to ship: among a sweep's `ok` points, the fastest by `select.metric` whose accuracy stays within
`select.max_accuracy_drop` of the fp32 reference.

`python -m pipeline.select SWEEP_DIR` prints the choice and (re)writes `SWEEP_DIR/selection.json`; every sweep
does the same at its end (pipeline/run/app.py), and `results.load` reads the file back as the runs columns
`selected`, `objective` and `feasible` (the job tables themselves are never rewritten).

Accuracy, per run, against the fp32 reference:
- with labelled data (the accuracy table has `top1_accuracy` rows): the drop is the absolute top-1 drop,
  `top1_accuracy_drop` = `top1_accuracy_reference` (the fp32 reference's top-1) - `top1_accuracy` (the run's);
- without labels: the first output's `rel_l2_err` against the fp32 reference.
A point qualifies when that drop is at most `select.max_accuracy_drop` (top-1), or its rel_l2_err at most
`select.max_relative_error` (unlabelled).

Noise. CoV is the spread of single iterations; a median over N iterations is much steadier than that (on a
shared CPU, CoV is often above 100 % while the median repeats within a few percent). So the noise of a point's
metric is the spread of its trial medians (`trial_spread`) when it ran `benchmark.trials` > 1, else the 95 %
half-width of its median estimated from CoV and N (1.96 x 1.2533 x CoV / sqrt(N), the normal approximation,
conservative for the heavy-tailed timings of a busy host). Both are printed beside the CoV.

The objective a search sweeper minimises (pipeline/run/app.py returns it from every job) is the metric itself
(negated for throughput/*, where higher is better), or PENALTY for a point that is not ok, has no such metric,
no accuracy, or loses more than max_accuracy_drop.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml

from pipeline import results
from pipeline.config import schema

PENALTY = 1e9  # the objective of an infeasible point: above any real latency, and above any negated throughput
TOP1 = "top1_accuracy"                      # the run's own top-1 accuracy on labelled data
TOP1_REFERENCE = "top1_accuracy_reference"  # the fp32 reference's top-1 on the same data
TOP1_DROP = "top1_accuracy_drop"            # reference - run (positive: the run is less accurate)
RELATIVE = "rel_l2_err"                     # without labels: the first output against the fp32 reference
BASELINE = "fp32"
_Z95, _MEDIAN_SE = 1.96, 1.2533  # 95 % two-sided; the median's standard error over the mean's, normal data


class SelectError(ValueError):
    """A select.* value that cannot be used; the message names the key, the value and what is valid."""


@dataclass(frozen=True)
class Rule:
    metric: str = "latency/median"
    max_accuracy_drop: float = 0.01    # top-1, where labelled
    max_relative_error: float = 0.05   # rel_l2_err against fp32, where not

    def bound(self, kind: str) -> tuple[str, float]:
        """The key and the limit a point's accuracy is held to."""
        if kind == "top-1":
            return "select.max_accuracy_drop", self.max_accuracy_drop
        return "select.max_relative_error", self.max_relative_error

    @property
    def key(self) -> tuple[str, str]:
        """(summary metric, stat), e.g. ('latency', 'median')."""
        try:
            return schema.metric_key(self.metric)
        except schema.ConfigError as err:
            raise SelectError(str(err)) from err

    @property
    def higher_is_better(self) -> bool:
        return self.key[0] == "throughput"

    def objective(self, value: float) -> float:
        """Lower is better whatever the metric, as a minimising sweeper wants it."""
        return -value if self.higher_is_better else value

    @classmethod
    def from_config(cls, select: dict | None) -> Rule:
        select = select or {}
        drop = float(select.get("max_accuracy_drop", cls.max_accuracy_drop))
        # a sweep recorded before max_relative_error existed bounded rel_l2_err by max_accuracy_drop: keep its answer
        relative = select.get("max_relative_error", drop if "max_accuracy_drop" in select else cls.max_relative_error)
        return cls(str(select.get("metric", cls.metric)), drop, float(relative))


@dataclass
class Noise:
    pct: float               # how far apart two values of the metric may lie by chance, in percent
    text: str                # how it was measured, for the reader
    cov: float | None = None  # the CoV of single iterations (percent), shown beside it

    @staticmethod
    def of(stats: dict, metric: str, iterations) -> Noise | None:
        headline = "gpu_compute" if ("gpu_compute", "median") in stats else "latency"
        spread = stats.get((headline, "trial_spread"))
        cov = stats.get((metric, "cov"), stats.get((headline, "cov")))
        cov_text = f"CoV {pct(cov[0])}" if cov else "no CoV"
        cov_value = float(cov[0]) if cov else None
        if spread is not None:
            return Noise(float(spread[0]), f"trial spread {pct(spread[0])}, {cov_text}", cov_value)
        if cov_value is None:
            return None
        n = _number(iterations)
        if not n or n < 2:  # no iteration count: CoV itself, the most conservative reading
            return Noise(cov_value, cov_text, cov_value)
        half = _Z95 * _MEDIAN_SE * cov_value / math.sqrt(n)
        return Noise(half, f"median ±{pct(half)} at 95%, {cov_text} over {int(n)} iterations", cov_value)


@dataclass
class Point:
    run_id: str
    status: str
    name: str = ""
    value: float | None = None   # select.metric
    unit: str = ""
    drop: float | None = None    # accuracy lost against fp32 (kind says which measure)
    kind: str = ""               # "top-1" | "rel_l2_err" | ""
    top1: float | None = None    # the run's top-1, where labelled
    noise: Noise | None = None
    precision: str = ""
    others: tuple = ()           # the point's other swept values (to find its fp32 twin)
    why: str | None = "not judged"
    objective: float = PENALTY

    @property
    def feasible(self) -> bool:
        return self.why is None


def judge(run_id: str, status: str, stats: dict, accuracy: list[dict], iterations, rule: Rule) -> Point:
    """One run against the rule: its metric, accuracy drop and noise; feasible or why not; its objective.

    stats: (metric, stat) -> (value, unit) of the run's summary; accuracy: its accuracy rows, in table order."""
    point = Point(run_id, str(status))
    name, stat = rule.key
    if (name, stat) in stats:
        point.value, point.unit = float(stats[(name, stat)][0]), str(stats[(name, stat)][1] or "")
    point.drop, point.kind, point.top1 = accuracy_drop(accuracy)
    point.noise = Noise.of(stats, name, iterations)
    if point.status != "ok":
        point.why = point.status
    elif point.value is None or not math.isfinite(point.value):
        point.why = f"no {rule.metric} measured"
    elif point.drop is None:
        point.why = "no accuracy measured (validate did not run)"
    elif point.drop > rule.bound(point.kind)[1]:
        key, limit = rule.bound(point.kind)
        point.why = f"{_accuracy_words(point)} > {key}={limit:g}"
    else:
        point.why = None
        point.objective = rule.objective(point.value)
    return point


def accuracy_drop(rows: list[dict]) -> tuple[float | None, str, float | None]:
    """(drop, kind, the run's top-1) from a run's accuracy rows: top-1 on labelled data, else rel_l2_err."""
    first = {}
    for row in rows:  # the first output's value of each metric, as the printed summary shows
        first.setdefault(row["metric"], row["value"])
    top1 = _number(first.get(TOP1))
    if top1 is not None:
        drop = _number(first.get(TOP1_DROP))
        reference = _number(first.get(TOP1_REFERENCE))
        if drop is None and reference is not None:
            drop = reference - top1
        return drop, "top-1", top1
    relative = _number(first.get(RELATIVE))
    return relative, RELATIVE if relative is not None else "", None


def objective(status: str, summary_rows, accuracy_rows, iterations, select_config: dict | None) -> float:
    """A job's objective from its own tables (pipeline/run/app.py returns it to the sweeper)."""
    rule = Rule.from_config(select_config)
    stats = {(r["metric"], r["stat"]): (r["value"], r.get("unit")) for r in summary_rows or []}
    return judge("", status, stats, list(accuracy_rows or []), iterations, rule).objective


def _number(value) -> float | None:
    if value is None or (pd.api.types.is_scalar(value) and pd.isna(value)):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


# --------------------------------------------------------------------------- every run of a sweep


def rule_of(runs: pd.DataFrame) -> Rule:
    """select.* from the runs' recorded configs (every job of a sweep shares them); the defaults if none says."""
    found = {}
    for text in runs["config"].dropna().unique():
        select = _select_block(str(text))
        if select is not None:
            found.setdefault(json.dumps(select, sort_keys=True), select)
    if len(found) > 1:
        raise SelectError(f"the runs disagree on select.*: {', '.join(found)}; pass each sweep on its own")
    return Rule.from_config(next(iter(found.values()), None))


def _select_block(config: str) -> dict | None:
    """The `select:` mapping of a recorded config, without parsing all of it (a sweep has thousands)."""
    lines = config.splitlines()
    try:
        start = lines.index("select:")
    except ValueError:
        return None
    block = [lines[start]]
    for line in lines[start + 1:]:
        if line and not line.startswith((" ", "-")):
            break
        block.append(line)
    parsed = yaml.safe_load("\n".join(block)) or {}
    return parsed.get("select") if isinstance(parsed.get("select"), dict) else None


def points(loaded: results.Results, rule: Rule) -> list[Point]:
    """Every run of `loaded`, judged, in sweep order, named by its swept values."""
    from pipeline.analysis.sweeps import swept_values

    runs = loaded.runs.sort_values(["job", "started", "run_id"], na_position="last").reset_index(drop=True)
    stats: dict[str, dict] = {}
    for r in loaded.summary.itertuples(index=False):
        stats.setdefault(r.run_id, {})[(r.metric, r.stat)] = (r.value, r.unit)
    accuracy: dict[str, list[dict]] = {}
    for r in loaded.accuracy.itertuples(index=False):
        accuracy.setdefault(r.run_id, []).append({"metric": r.metric, "value": r.value})
    swept = swept_values(runs)
    names = point_names(runs, swept)
    others = swept.drop(columns=["precision"], errors="ignore")
    iterations = runs["benchmark_iterations"] if "benchmark_iterations" in runs else [None] * len(runs)
    out = []
    for i, run in enumerate(runs.itertuples(index=False)):
        p = judge(run.run_id, run.status, stats.get(run.run_id, {}), accuracy.get(run.run_id, []),
                  iterations[i], rule)
        p.name, p.precision, p.others = names[i], str(run.precision), tuple(others.iloc[i])
        out.append(p)
    return out


def point_names(runs: pd.DataFrame, swept: pd.DataFrame) -> list[str]:
    """'precision=fp16 batch_size=8': each run's swept values by their short key; its precision if none."""
    from pipeline.analysis.sweeps import short_keys

    short = short_keys(swept.columns)
    names = []
    for i in range(len(runs)):
        parts = [f"{short[k]}={v}" for k, v in swept.iloc[i].items() if v != ""] if len(swept.columns) else []
        names.append(" ".join(parts) or f"precision={runs['precision'].iloc[i]}")
    return names


# --------------------------------------------------------------------------- the choice


@dataclass
class Selection:
    rule: Rule
    points: list[Point]
    best: Point | None = None
    runner_up: Point | None = None
    baseline: Point | None = None
    baseline_is_fp32: bool = False
    problem: str | None = None  # why nothing can be chosen at all (a metric no run measured)

    def line(self) -> str:
        return _best_line(self) if self.best is not None else _none_line(self)

    def to_json(self) -> dict:
        return {"version": 1, "metric": self.rule.metric, "max_accuracy_drop": self.rule.max_accuracy_drop,
                "max_relative_error": self.rule.max_relative_error,
                "selected": self.best.run_id if self.best else None, "line": self.line(),
                "points": {p.run_id: {"name": p.name, "status": p.status, "feasible": p.feasible,
                                      "objective": p.objective, "value": p.value, "accuracy_drop": p.drop,
                                      "accuracy_kind": p.kind or None, "why": p.why} for p in self.points}}


def choose(loaded: results.Results, rule: Rule | None = None) -> Selection:
    """The build to ship among the runs of `loaded` (one sweep), with its runner-up and its baseline."""
    rule = rule or rule_of(loaded.runs)
    _ = rule.key  # a malformed select.metric fails here, with its one line
    judged = points(loaded, rule)
    selection = Selection(rule, judged)
    ok = [p for p in judged if p.status == "ok"]
    if ok and all(p.value is None for p in ok):
        have = sorted({f"{m}/{s}" for m, s in zip(loaded.summary["metric"], loaded.summary["stat"])})
        selection.problem = (f"select.metric = '{rule.metric}' is in no ok run's summary; measured: "
                             f"{', '.join(have[:12]) or 'nothing'}")
        return selection
    feasible = sorted((p for p in judged if p.feasible), key=lambda p: p.objective)
    if not feasible:
        return selection
    best = selection.best = feasible[0]
    selection.runner_up = feasible[1] if len(feasible) > 1 else None
    twins = [p for p in ok if p.precision == BASELINE and p.others == best.others and p is not best
             and p.value is not None]
    if twins:
        selection.baseline, selection.baseline_is_fp32 = twins[0], True
    elif len(feasible) > 1:
        selection.baseline = feasible[-1]  # the slowest qualifying point
    return selection


def _best_line(s: Selection) -> str:
    best, rule = s.best, s.rule
    text = f"best: {best.name} {describe(rule, best.value, best.unit)}"
    if s.baseline is not None:
        ratio = speedup(rule, best.value, s.baseline.value)
        than = (f"fp32 ({s.baseline.name})" if s.baseline_is_fp32
                else f"the slowest qualifying point ({s.baseline.name})")
        text += f", {ratio:.2g}x faster than {than}" if ratio >= 1 else f", {1 / ratio:.2g}x slower than {than}"
    else:
        text += f", the only point within {rule.bound(best.kind)[0]}"
    text += f", {_accuracy_text(best, rule)}"
    if s.runner_up is not None:
        text += f" {_margin_text(rule, best, s.runner_up)}"
    return text


def _none_line(s: Selection) -> str:
    kinds = {p.kind for p in s.points if p.status == "ok" and p.kind}
    bounds = [s.rule.bound(kind) for kind in sorted(kinds)] or [s.rule.bound(k) for k in ("top-1", "rel_l2_err")]
    head = "best: none within " + " / ".join(f"{key}={limit:g}" for key, limit in bounds)
    if s.problem:
        return f"{head}: {s.problem}"
    ok = [p for p in s.points if p.status == "ok"]
    if not ok:
        counts = pd.Series([p.status for p in s.points]).value_counts().to_dict() if s.points else {}
        return f"{head}: no point is ok ({', '.join(f'{n} {k}' for k, n in counts.items()) or 'no runs'})"
    misses = sorted((p for p in ok if p.value is not None and p.drop is not None), key=lambda p: p.drop)
    if not misses:
        return f"{head}: no ok point has both {s.rule.metric} and an accuracy measurement ({ok[0].why})"
    miss = misses[0]
    return (f"{head} (closest miss: {miss.name}, {_accuracy_words(miss)}, "
            f"{describe(s.rule, miss.value, miss.unit)})")


def describe(rule: Rule, value: float, unit: str) -> str:
    """'0.412 ms median latency', '3,857 samples/s throughput'."""
    name, stat = rule.key
    shown = f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}"
    return f"{shown} {unit} {name}".replace("  ", " ") if name == "throughput" else f"{shown} {unit} {stat} {name}"


def speedup(rule: Rule, best: float, other: float) -> float:
    """How many times better `best` is than `other` (above 1: better)."""
    if rule.higher_is_better:
        return best / other if other else math.inf
    return other / best if best else math.inf


def worse_pct(rule: Rule, a: float, b: float) -> float:
    """How much worse b is than a, in percent of a (negative: b is better)."""
    if not a:
        return 0.0 if a == b else math.inf
    return (a - b) / a * 100 if rule.higher_is_better else (b - a) / a * 100


def combined_noise(*points: Point) -> Noise | None:
    known = [p.noise for p in points if p.noise is not None]
    return max(known, key=lambda n: n.pct) if known else None


def _accuracy_words(p: Point) -> str:
    """'top-1 drop 0.02', 'rel_l2_err 0.05'."""
    return f"top-1 drop {p.drop:.3g}" if p.kind == "top-1" else f"{p.kind} {p.drop:.3g}"


def _accuracy_text(p: Point, rule: Rule) -> str:
    if p.kind == "top-1":
        return f"top-1 {p.top1:.3f} ({0.0 - p.drop:+.3f})"
    return f"rel_l2_err {p.drop:.2g} vs fp32, max {rule.max_relative_error:g}"


def _margin_text(rule: Rule, best: Point, runner_up: Point) -> str:
    margin = worse_pct(rule, best.value, runner_up.value)
    noise = combined_noise(best, runner_up)
    if noise is None:
        return f"(margin {pct(margin)} over {runner_up.name}; noise not measured)"
    if margin <= noise.pct:
        return f"(margin {pct(margin)} over {runner_up.name} is within the noise: {noise.text})"
    return f"(margin {pct(margin)} over {runner_up.name}, beyond the noise: {noise.text})"


def pct(value: float) -> str:
    """'0.83%', '12%', '290%': two significant digits, never in e-notation."""
    if not math.isfinite(value):
        return f"{value}%"
    return f"{value:.0f}%" if abs(value) >= 10 else f"{value:.2g}%"


# --------------------------------------------------------------------------- the sweep's record


def write(sweep_dir: str | os.PathLike, selection: Selection) -> Path:
    """`sweep_dir/selection.json`, replaced atomically (a reader never sees half of it)."""
    path = Path(sweep_dir) / results.SELECTION_FILE
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(selection.to_json(), indent=2, default=_plain, ensure_ascii=False),
                       encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _plain(value):
    return value.item() if hasattr(value, "item") else str(value)


def select_sweep(sweep_dir: str | os.PathLike, loaded: results.Results | None = None) -> Selection:
    """Choose the build to ship of the sweep at `sweep_dir` and record it there."""
    loaded = loaded or results.load(sweep_dir, tables=("runs", "summary", "accuracy"))
    selection = choose(loaded)
    write(sweep_dir, selection)
    return selection


@contextlib.contextmanager
def no_results_warning():
    """results.load's warning for a path without tables, silenced where the caller says so itself."""
    def keep(record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("no results under")

    results.log.addFilter(keep)
    try:
        yield
    finally:
        results.log.removeFilter(keep)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.select", description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep_dir", type=Path, help="a sweep directory (its selection.json is rewritten)")
    args = parser.parse_args(argv)
    try:
        with no_results_warning():  # the error below says it, on its one line
            loaded = results.load(args.sweep_dir, tables=("runs", "summary", "accuracy"))
        if loaded.runs.empty:
            raise FileNotFoundError(f"{args.sweep_dir}: no results (no tables/runs.parquet below it)")
        selection = select_sweep(args.sweep_dir, loaded)
    except (FileNotFoundError, NotADirectoryError, SelectError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(selection.line())
    for line in loaded.missing_lines():  # chosen among the points there are: not the sweep's choice
        print(f"missing: {line}", file=sys.stderr)
    return 0 if selection.best is not None and not loaded.missing else 1


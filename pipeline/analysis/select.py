"""The build to ship: among a sweep's `ok` points, the fastest by `select.metric` whose accuracy stays within bounds
of the fp32 reference; one answer per workload (each batch size, each size of a named axis), since those are what
the build will serve, not choices of build.

`python -m pipeline.select SWEEP_DIR` prints the choice and (re)writes `SWEEP_DIR/selection.json`; every sweep
does the same at its end (pipeline/run/app.py), and `results.load` reads the file back as the runs columns
`selected`, `objective` and `feasible` (the job tables themselves are never rewritten).

Accuracy, per run, against the fp32 reference (`select.accuracy`, default `auto`, picks the first that applies):
- `top1`, with class labels: the top-1 drop (`top1_accuracy_reference` - `top1_accuracy`). Both models judged the
  same samples, so the drop is paired: its interval at `select.confidence` comes from a paired bootstrap and
  McNemar's exact test says whether the two differ at all (pipeline/analysis/paired.py, from the discordant
  counts `top1_run_only` / `top1_reference_only`). A point qualifies when the interval's upper end is within
  `select.max_accuracy_drop`; when the interval straddles the bound the data are too few to decide, and the point
  says so, with about how many samples would;
- `task/<name>`, with a task metric (`mae`, `rmse`, `r2` on float labels, or validate.metric's function): its
  `<name>_drop` (positive: worse than fp32) at most `select.max_task_drop`; `auto` takes `task/r2` on float labels;
- `agreement`, without labels: the judged output's `rel_l2_err` at most `select.max_relative_error` and, where it is
  class scores, its `top1_agreement` at least `select.min_top1_agreement` (a small error can still flip decisions);
  the point says which bound decided.

Noise. CoV is the spread of single iterations; a median over N iterations is much steadier than that (on a
shared CPU, CoV is often above 100 % while the median repeats within a few percent). So the noise of a point's
metric is the spread of its trial medians (`trial_spread`) when it ran `benchmark.trials` > 1, else the 95 %
half-width of its median estimated from CoV and N (1.96 x 1.2533 x CoV / sqrt(N), the normal approximation,
conservative for the heavy-tailed timings of a busy host). Both are printed beside the CoV.

The objective a search sweeper minimises (pipeline/run/app.py returns it from every job) is the metric itself
(negated for throughput/*, where higher is better), or PENALTY for a point that is not ok, has no such metric,
no accuracy, or loses more than its bound allows.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import yaml

from pipeline import results
from pipeline.analysis import noise as noise_model
from pipeline.analysis import paired
from pipeline.analysis.noise import Noise, pct
from pipeline.config import schema

PENALTY = 1e9  # the objective of an infeasible point: above any real latency, and above any negated throughput
TOP1 = "top1_accuracy"                      # the run's own top-1 accuracy on labelled data
TOP1_REFERENCE = "top1_accuracy_reference"  # the fp32 reference's top-1 on the same data
TOP1_DROP = "top1_accuracy_drop"            # reference - run (positive: the run is less accurate)
RELATIVE = "rel_l2_err"                     # without labels: the judged output against the fp32 reference
AGREEMENT = "top1_agreement"                # without labels, class scores: top-1 decisions that match fp32's
RUN_ONLY, REFERENCE_ONLY = "top1_run_only", "top1_reference_only"  # paired counts: right for one side only
BASELINE = "fp32"
WORKLOAD_AXES = ("batch_size",)  # with every `axes.<name>`: what a build serves, so one answer per value
ACCURACY_MODES = ("auto", "top1", "agreement", "task/<name>")
_Z95, _MEDIAN_SE = 1.96, 1.2533  # 95 % two-sided; the median's standard error over the mean's, normal data


class SelectError(ValueError):
    """A select.* value that cannot be used; the message names the key, the value and what is valid."""


@dataclass(frozen=True)
class Rule:
    metric: str = "latency/median"
    max_accuracy_drop: float = 0.01    # top-1, where labelled
    max_relative_error: float = 0.05   # rel_l2_err against fp32, where not
    min_top1_agreement: float = 0.99   # top-1 agreement with fp32, where not labelled and the output is class scores
    confidence: float = 0.95           # of the paired interval on the top-1 drop
    accuracy: str = "auto"             # auto | top1 | agreement | task/<name>
    max_task_drop: float = 0.01        # the drop of select.accuracy=task/<name>
    per_workload: bool = True          # one answer per workload; false: one over every point (a search's answer)

    def bound(self, kind: str) -> tuple[str, float]:
        """The key and the limit a point's accuracy is held to."""
        if kind == "top-1":
            return "select.max_accuracy_drop", self.max_accuracy_drop
        if kind.startswith("task/"):
            return "select.max_task_drop", self.max_task_drop
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
        rule = cls(str(select.get("metric", cls.metric)), drop, float(relative),
                   float(select.get("min_top1_agreement", cls.min_top1_agreement)),
                   float(select.get("confidence", cls.confidence)), str(select.get("accuracy", cls.accuracy)),
                   float(select.get("max_task_drop", cls.max_task_drop)),
                   bool(select.get("per_workload", cls.per_workload)))
        if not 0 < rule.confidence < 1:
            raise SelectError(f"select.confidence = {rule.confidence:g}: must lie between 0 and 1 (e.g. 0.95)")
        if not 0 <= rule.min_top1_agreement <= 1:
            raise SelectError(f"select.min_top1_agreement = {rule.min_top1_agreement:g}: must lie in 0..1")
        if rule.accuracy not in ACCURACY_MODES[:3] and not (rule.accuracy.startswith("task/") and rule.accuracy[5:]):
            raise SelectError(f"select.accuracy = '{rule.accuracy}': valid: {', '.join(ACCURACY_MODES)}")
        return rule


def noise_of(stats: dict, metric: str, iterations) -> Noise | None:
    """How far the point's value may lie from another's by chance: the median's recorded 95 % interval (a bootstrap
    over trial medians, or a block bootstrap over the iterations), else, for runs recorded before it, the trial
    spread or CoV / sqrt(N) over assumed-independent iterations."""
    measured = noise_model.from_stats(stats)
    if measured is not None:
        return measured
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
    if n == 1:  # one timing: its CoV of 0 says nothing of the noise
        return None
    if not n:  # no iteration count: CoV itself, the most conservative reading
        return Noise(cov_value, cov_text, cov_value)
    half = _Z95 * _MEDIAN_SE * cov_value / math.sqrt(n)
    return Noise(half, f"median ±{pct(half)} at 95%, {cov_text} over {int(n)} iterations", cov_value)


@dataclass
class Point:
    run_id: str
    status: str
    name: str = ""               # every swept value
    build: str = ""              # the swept values that are not workload axes (how it is built)
    value: float | None = None   # select.metric
    unit: str = ""
    drop: float | None = None    # accuracy lost against fp32 (kind says which measure)
    kind: str = ""               # "top-1" | "rel_l2_err" | "task/<name>" | ""
    top1: float | None = None    # the run's top-1, where labelled
    noise: Noise | None = None
    precision: str = ""
    others: tuple = ()           # the point's other swept values (to find its fp32 twin)
    why: str | None = "not judged"
    objective: float = PENALTY
    interval: paired.Drop | None = None  # the paired top-1 drop and how sure it is, where labelled
    agreement: float | None = None       # top-1 agreement with fp32, where the output is class scores
    task: float | None = None            # the run's task metric (kind task/<name>)
    samples: int | None = None           # how many samples the accuracy rests on
    decided: str = ""                    # which bound decided, in words
    undecided: str | None = None         # why the data are too few to decide, where they are
    workload: tuple = ()                 # ((short key, value), ...) of the workload axes swept
    latency: float | None = None         # median latency (ms) and throughput (samples/s): both views of the answer
    throughput: float | None = None

    @property
    def feasible(self) -> bool:
        return self.why is None


def judge(run_id: str, status: str, stats: dict, accuracy: list[dict], iterations, rule: Rule) -> Point:
    """One run against the rule: its metric, accuracy drop and noise; feasible or why not; its objective.

    stats: (metric, stat) -> (value, unit) of the run's summary; accuracy: its accuracy rows (metric, value and
    samples), in table order (the judged output's first)."""
    point = Point(run_id, str(status))
    name, stat = rule.key
    if (name, stat) in stats:
        point.value, point.unit = float(stats[(name, stat)][0]), str(stats[(name, stat)][1] or "")
    point.latency = _number(stats.get(("latency", "median"), (None,))[0])
    point.throughput = _number(stats.get(("throughput", "samples_per_s"), (None,))[0])
    measured = accuracy_of(point, accuracy, rule)
    point.noise = noise_of(stats, name, iterations)
    if point.status != "ok":
        point.why = point.status
    elif point.value is None or not math.isfinite(point.value):
        point.why = f"no {rule.metric} measured"
    elif measured is not None:
        point.why = measured
    else:
        point.why = None
        point.objective = rule.objective(point.value)
    return point


def accuracy_of(point: Point, rows: list[dict], rule: Rule) -> str | None:
    """Fill the point's accuracy (drop, kind, interval, ...) from its accuracy rows; why it does not qualify, or None.
    """
    first, samples = {}, {}
    for row in rows:  # the judged output's value of each metric: its rows come first
        first.setdefault(row["metric"], row["value"])
        samples.setdefault(row["metric"], row.get("samples"))
    mode = rule.accuracy
    if mode == "auto":
        mode = "top1" if _number(first.get(TOP1)) is not None else (
            "task/r2" if _number(first.get("r2_drop")) is not None else "agreement")
    if mode == "top1":
        return _top1(point, first, samples, rule)
    if mode.startswith("task/"):
        return _task(point, mode, first, samples, rule)
    return _agreement(point, first, samples, rule)


def _top1(point: Point, first: dict, samples: dict, rule: Rule) -> str | None:
    point.kind, point.top1 = "top-1", _number(first.get(TOP1))
    if point.top1 is None:
        return "no top-1 accuracy measured (select.accuracy=top1 needs validate.data with class labels)"
    point.drop = _number(first.get(TOP1_DROP))
    reference = _number(first.get(TOP1_REFERENCE))
    if point.drop is None and reference is not None:
        point.drop = reference - point.top1
    point.samples = _count(samples.get(TOP1))
    b, c = _count(first.get(RUN_ONLY)), _count(first.get(REFERENCE_ONLY))
    key, limit = rule.bound("top-1")
    if point.samples and b is not None and c is not None:
        point.interval = paired.drop(point.samples, b, c, rule.confidence)
        point.drop = point.interval.value
        point.decided = f"upper end {point.interval.high:.3f} {'<=' if point.interval.high <= limit else '>'} {key}"
        if point.interval.high <= limit:
            return None
        need = point.interval.samples_to_decide(limit)
        if need is not None:
            point.undecided = (f"too few samples to decide ({point.samples:,}; about {need:,} would narrow the "
                               f"interval to one side of {limit:g})")
            return f"top-1 {point.interval.text()} straddles {key}={limit:g}: {point.undecided}"
        return f"top-1 {point.interval.text()} > {key}={limit:g}"
    if point.drop is None:  # pragma: no cover - a top-1 row without its drop or reference is not written
        return "no top-1 drop measured"
    point.decided = f"drop {point.drop:.3g} (no paired counts recorded: a point estimate) vs {key}"
    return None if point.drop <= limit else f"{_accuracy_words(point)} > {key}={limit:g}"


def _task(point: Point, mode: str, first: dict, samples: dict, rule: Rule) -> str | None:
    name = mode[5:]
    point.kind, point.drop = mode, _number(first.get(f"{name}_drop"))
    point.task, point.samples = _number(first.get(name)), _count(samples.get(name))
    if point.drop is None:
        drops = sorted(m[:-5] for m in first if m.endswith("_drop") and not m.startswith("top"))
        return (f"no task metric '{name}' measured (select.accuracy={mode}; measured: "
                f"{', '.join(drops) or 'none: it needs validate.data with labels'})")
    key, limit = rule.bound(mode)
    point.decided = f"{name} drop {point.drop:.3g} {'<=' if point.drop <= limit else '>'} {key}"
    return None if point.drop <= limit else f"{_accuracy_words(point)} > {key}={limit:g}"


def _agreement(point: Point, first: dict, samples: dict, rule: Rule) -> str | None:
    point.kind, point.drop = RELATIVE, _number(first.get(RELATIVE))
    point.agreement, point.samples = _number(first.get(AGREEMENT)), _count(samples.get(RELATIVE))
    if point.drop is None:
        point.kind = ""
        return "no accuracy measured (validate did not run)"
    key, limit = rule.bound(RELATIVE)
    checks = [(point.drop <= limit, f"rel_l2_err {point.drop:.2g} {'<=' if point.drop <= limit else '>'} {key}")]
    if point.agreement is not None:
        ok = point.agreement >= rule.min_top1_agreement
        checks.append((ok, f"top-1 agreement {point.agreement:.3f} {'>=' if ok else '<'} select.min_top1_agreement"))
    failed = [text for ok, text in checks if not ok]
    point.decided = ", ".join(failed or [text for _, text in checks])
    if not failed:
        return None
    return "; ".join(f"{text}={limit:g}" if "rel_l2_err" in text else f"{text}={rule.min_top1_agreement:g}"
                     for text in failed)


def _count(value) -> int | None:
    number = _number(value)
    return None if number is None else int(round(number))


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


def recorded_rule(config: str) -> Rule:
    """select.* of one recorded config (the YAML of a runs row); the defaults where it has none."""
    return Rule.from_config(_select_block(config))


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
    """Every run of `loaded`, judged, in sweep order, named by its swept values (`name`) and split into the build
    (`build`: the values that are not workload axes) and its workload."""
    from pipeline.analysis.sweeps import short_keys, swept_values

    runs = loaded.runs.sort_values(["job", "started", "run_id"], na_position="last").reset_index(drop=True)
    stats: dict[str, dict] = {}
    for r in loaded.summary.itertuples(index=False):
        stats.setdefault(r.run_id, {})[(r.metric, r.stat)] = (r.value, r.unit)
    accuracy: dict[str, list[dict]] = {}
    for r in loaded.accuracy.itertuples(index=False):
        accuracy.setdefault(r.run_id, []).append({"metric": r.metric, "value": r.value, "samples": r.samples})
    swept = swept_values(runs)
    names = point_names(runs, swept)
    workload = [k for k in swept.columns if is_workload(k)]
    builds = point_names(runs, swept.drop(columns=workload)) if rule.per_workload else names
    short = short_keys(swept.columns)
    others = swept.drop(columns=["precision"], errors="ignore")
    iterations = runs["benchmark_iterations"] if "benchmark_iterations" in runs else [None] * len(runs)
    out = []
    for i, run in enumerate(runs.itertuples(index=False)):
        p = judge(run.run_id, run.status, stats.get(run.run_id, {}), accuracy.get(run.run_id, []),
                  iterations[i], rule)
        p.name, p.precision, p.others = names[i], str(run.precision), tuple(others.iloc[i])
        p.build = builds[i]
        p.workload = tuple((short[k], swept[k].iloc[i]) for k in workload) if rule.per_workload else ()
        out.append(p)
    return out


def is_workload(key: str) -> bool:
    """A swept key that sizes what the build serves (batch, sequence, ...), not how it is built."""
    return key in WORKLOAD_AXES or key.startswith(("axes.", "axes_"))


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
class Choice:
    """The answer for one workload (one batch size, one sequence length...; () when none was swept)."""
    workload: tuple
    points: list[Point]
    best: Point | None = None
    runner_up: Point | None = None
    baseline: Point | None = None
    baseline_is_fp32: bool = False

    @property
    def label(self) -> str:
        return " ".join(f"{k}={v}" for k, v in self.workload)


@dataclass
class Selection:
    rule: Rule
    points: list[Point]
    choices: list[Choice] = field(default_factory=list)
    problem: str | None = None  # why nothing can be chosen at all (a metric no run measured)

    # a sweep of one workload has one answer: its best, runner-up and baseline (None with several workloads)
    @property
    def best(self) -> Point | None:
        return self.choices[0].best if len(self.choices) == 1 else None

    @property
    def runner_up(self) -> Point | None:
        return self.choices[0].runner_up if len(self.choices) == 1 else None

    @property
    def baseline(self) -> Point | None:
        return self.choices[0].baseline if len(self.choices) == 1 else None

    @property
    def chosen(self) -> list[Point]:
        return [c.best for c in self.choices if c.best is not None]

    @property
    def complete(self) -> bool:
        """Every workload has a build to ship."""
        return bool(self.choices) and all(c.best is not None for c in self.choices)

    def line(self) -> str:
        """'best: ...', or with several workloads one 'best at batch_size=1: ...' line each and the throughput view."""
        if self.problem or len(self.choices) <= 1:
            choice = self.choices[0] if self.choices else Choice((), [])
            chosen = choice.best is not None and not self.problem
            return "best: " + (_best_text(self, choice) if chosen else _none_text(self, choice))
        lines = [f"best at {c.label}: " + (_best_text(self, c) if c.best else _none_text(self, c))
                 for c in self.choices]
        return "\n".join(lines + _throughput_lines(self))

    def to_json(self) -> dict:
        rule = self.rule
        return {"version": 2, "metric": rule.metric, "max_accuracy_drop": rule.max_accuracy_drop,
                "max_relative_error": rule.max_relative_error, "min_top1_agreement": rule.min_top1_agreement,
                "confidence": rule.confidence, "accuracy": rule.accuracy, "max_task_drop": rule.max_task_drop,
                "selected": [p.run_id for p in self.chosen], "line": self.line(),
                "workloads": [{"workload": dict(c.workload), "selected": c.best.run_id if c.best else None}
                              for c in self.choices],
                "points": {p.run_id: _point_json(p) for p in self.points}}


def _point_json(p: Point) -> dict:
    out = {"name": p.name, "status": p.status, "feasible": p.feasible, "objective": p.objective, "value": p.value,
           "accuracy_drop": p.drop, "accuracy_kind": p.kind or None, "samples": p.samples,
           "decided": p.decided or None, "why": p.why}
    if p.interval is not None:
        out.update(interval=[p.interval.low, p.interval.high], confidence=p.interval.confidence,
                   mcnemar_p=p.interval.p_value, run_only=p.interval.run_only,
                   reference_only=p.interval.reference_only)
    return out


def choose(loaded: results.Results, rule: Rule | None = None) -> Selection:
    """The build to ship among the runs of `loaded` (one sweep), per workload, with its runner-up and baseline."""
    rule = rule or rule_of(loaded.runs)
    _ = rule.key  # a malformed select.metric fails here, with its one line
    judged = points(loaded, rule)
    selection = Selection(rule, judged)
    ok = [p for p in judged if p.status == "ok"]
    if ok and all(p.value is None for p in ok):
        have = sorted({f"{m}/{s}" for m, s in zip(loaded.summary["metric"], loaded.summary["stat"])})
        selection.problem = (f"select.metric = '{rule.metric}' is in no ok run's summary; measured: "
                             f"{', '.join(have[:12]) or 'nothing'}")
        if rule.key[0] == "task":  # a task metric is what accuracy is held to, not what is optimised
            selection.problem += (f" (to bound a task metric's drop: select.accuracy={rule.metric} "
                                  f"select.max_task_drop=)")
        return selection
    groups: dict[tuple, list[Point]] = {}
    for p in judged:
        groups.setdefault(p.workload, []).append(p)
    selection.choices = [_choose(Choice(workload, group)) for workload, group in groups.items()]
    return selection


def _choose(choice: Choice) -> Choice:
    feasible = sorted((p for p in choice.points if p.feasible), key=lambda p: p.objective)
    if not feasible:
        return choice
    best = choice.best = feasible[0]
    choice.runner_up = feasible[1] if len(feasible) > 1 else None
    twins = [p for p in choice.points if p.status == "ok" and p.precision == BASELINE and p.others == best.others
             and p is not best and p.value is not None]
    if twins:
        choice.baseline, choice.baseline_is_fp32 = twins[0], True
    elif len(feasible) > 1:
        choice.baseline = feasible[-1]  # the slowest qualifying point
    return choice


def _best_text(s: Selection, c: Choice) -> str:
    best, rule = c.best, s.rule
    name = best.build if c.workload else best.name
    text = f"{name} {describe(rule, best.value, best.unit)}{_other_view(rule, best)}"
    if best.precision == BASELINE and any(p.feasible and p.precision != BASELINE for p in c.points):
        text += ", nothing beat fp32"
    elif c.baseline_is_fp32 and _within_noise(rule, best, c.baseline):
        noise = combined_noise(best, c.baseline)
        text += (f", no faster than fp32 ({c.baseline.name}) beyond the noise "
                 f"({times(speedup(rule, best.value, c.baseline.value))}, noise ±{pct(noise.pct)})")
    elif c.baseline is not None:
        ratio = speedup(rule, best.value, c.baseline.value)
        than = (f"fp32 ({c.baseline.name})" if c.baseline_is_fp32
                else f"the slowest qualifying point ({c.baseline.name})")
        text += f", {times(ratio)} faster than {than}" if ratio >= 1 else f", {times(1 / ratio)} slower than {than}"
    else:
        text += f", the only point within {rule.bound(best.kind)[0]}"
    text += f", {_accuracy_text(best, rule)}"
    if c.runner_up is not None:
        text += f" {_margin_text(rule, best, c.runner_up)}"
    faster = [p for p in c.points if p.undecided and p.value is not None and p.objective == PENALTY
              and rule.objective(p.value) < best.objective]
    if faster:
        text += f"; {faster[0].name} is faster but undecided: {faster[0].undecided}"
    return text


def _none_text(s: Selection, c: Choice) -> str:
    kinds = {p.kind for p in c.points if p.status == "ok" and p.kind}
    bounds = [s.rule.bound(kind) for kind in sorted(kinds)] or [s.rule.bound(k) for k in ("top-1", "rel_l2_err")]
    if kinds == {RELATIVE} and any(p.agreement is not None for p in c.points):
        bounds.append(("select.min_top1_agreement", s.rule.min_top1_agreement))
    head = "none within " + " / ".join(f"{key}={limit:g}" for key, limit in bounds)
    if s.problem:
        return f"{head}: {s.problem}"
    ok = [p for p in c.points if p.status == "ok"]
    if not ok:
        counts = pd.Series([p.status for p in c.points]).value_counts().to_dict() if c.points else {}
        return f"{head}: no point is ok ({', '.join(f'{n} {k}' for k, n in counts.items()) or 'no runs'})"
    misses = sorted((p for p in ok if p.value is not None and p.drop is not None), key=lambda p: p.drop)
    if not misses:
        return f"{head}: no ok point has both {s.rule.metric} and an accuracy measurement ({ok[0].why})"
    miss = misses[0]
    return f"{head} (closest miss: {miss.name}, {miss.why}, {describe(s.rule, miss.value, miss.unit)})"


def _other_view(rule: Rule, p: Point) -> str:
    """The throughput beside a latency answer and the other way round: ' (2,427 samples/s)'."""
    if rule.key[0] == "throughput":
        return f" ({p.latency:.3g} ms median latency)" if p.latency is not None else ""
    return f" ({rate(p.throughput)} samples/s)" if p.throughput is not None else ""


def _within_noise(rule: Rule, best: Point, other: Point) -> bool:
    noise = combined_noise(best, other)
    return noise is not None and worse_pct(rule, best.value, other.value) <= noise.pct


def _throughput_lines(s: Selection) -> list[str]:
    """With several workloads, the one whose best build serves the most samples per second, against the fewest."""
    rated = [(c, c.best) for c in s.choices if c.best is not None and c.best.throughput]
    if len(rated) < 2:
        return []
    top, low = max(rated, key=lambda cp: cp[1].throughput), min(rated, key=lambda cp: cp[1].throughput)
    return [f"most throughput: {top[0].label} {top[1].build}, {rate(top[1].throughput)} samples/s "
            f"({times(top[1].throughput / low[1].throughput)} the {rate(low[1].throughput)} of {low[0].label})"]


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


def combined_noise(a: Point, b: Point) -> Noise | None:
    """The noise of the difference of two points' values: both sides' intervals (root sum of squares)."""
    return noise_model.between(a.noise, b.noise)


def _accuracy_words(p: Point) -> str:
    """'top-1 drop 0.02 [0.01, 0.03] at 95 %', 'rel_l2_err 0.05', 'task/mae drop 1.2'."""
    if p.kind == "top-1":
        return f"top-1 {p.interval.text()}" if p.interval is not None else f"top-1 drop {p.drop:.3g}"
    return f"{p.kind} drop {p.drop:.3g}" if p.kind.startswith("task/") else f"{p.kind} {p.drop:.3g}"


def _accuracy_text(p: Point, rule: Rule) -> str:
    if p.kind == "top-1":
        if p.interval is not None:
            return f"top-1 {p.top1:.3f}, {p.interval.text()}"
        return f"top-1 {p.top1:.3f}, drop {p.drop:.3f} (a point estimate: no paired counts recorded)"
    if p.kind.startswith("task/"):
        name = p.kind[5:]
        shown = f"{name} {p.task:.4g}, " if p.task is not None else ""
        return f"{shown}{name} drop {p.drop:.3g} vs fp32, max {rule.max_task_drop:g}"
    text = f"rel_l2_err {p.drop:.2g} vs fp32, max {rule.max_relative_error:g}"
    if p.agreement is not None:
        text += f", top-1 agreement {p.agreement:.3f}, min {rule.min_top1_agreement:g}"
    return text


def _margin_text(rule: Rule, best: Point, runner_up: Point) -> str:
    margin = worse_pct(rule, best.value, runner_up.value)
    noise = combined_noise(best, runner_up)
    if noise is None:
        return f"(margin {pct(margin)} over {runner_up.name}; noise not measured)"
    if margin <= noise.pct:
        return f"(margin {pct(margin)} over {runner_up.name} is within the noise: {noise.text})"
    return f"(margin {pct(margin)} over {runner_up.name}, beyond the noise: {noise.text})"


def times(ratio: float) -> str:
    """'1.0x', '1.9x', '12x', '126x': never e-notation."""
    if not math.isfinite(ratio):
        return f"{ratio}x"
    return f"{ratio:.0f}x" if ratio >= 10 else f"{ratio:.1f}x"


def rate(value: float) -> str:
    """'21,310', '950', '3.4': a rate for reading."""
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


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
    return 0 if selection.complete and not loaded.missing else 1


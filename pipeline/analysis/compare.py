"""`python -m pipeline.compare A B [--tolerance PCT]`: is B (a run or a sweep) a regression of A?

A and B are run directories or sweep directories (anything `results.load` reads). Their jobs are paired by
`config_hash`: the resolved config less what never changes a result (pipeline/run/job.py NEVER_CHANGES_RESULT: the
cache, the output directories, isolation, report and select settings), so a sweep pairs point by point with a
rerun of itself wherever it wrote. Each pair shows select.metric on both sides, B's change, the noise beside each
side's CoV (pipeline/analysis/select.py: the trial spread, or the median's 95 % half-width; the larger side counts), and
the accuracy of both against fp32 (top-1 on labelled data, else rel_l2_err of the first output).

Exit status 1 when any pair regressed: B worse than A by more than --tolerance AND by more than the noise; B
less accurate than A by more than select.max_accuracy_drop; or B not ok where A was. 0 otherwise (a sweep
compared with itself gives 0). 2 for a path without results, nothing paired, or a select.metric no run
measured. select.* comes from A's recorded configs unless --metric / --max-accuracy-drop say otherwise.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from pipeline import results
from pipeline.analysis import select

DEFAULT_TOLERANCE = 5.0  # percent
UNPAIRED_SHOWN = 20      # unpaired jobs named one by one; the rest are counted


class CompareError(Exception):
    """Nothing to compare: the one line says why."""


@dataclass
class Side:
    label: str                   # "A" or "B"
    path: Path
    points: dict[str, select.Point] = field(default_factory=dict)  # config_hash -> the latest run with it
    jobs: dict[str, str] = field(default_factory=dict)             # config_hash -> "job 3" (where it is)
    repeated: int = 0            # runs left out because a later run has the same config


@dataclass
class Pair:
    a: select.Point
    b: select.Point
    worse: float | None = None           # percent, positive: B is worse
    noise: select.Noise | None = None
    accuracy_loss: float | None = None   # B's accuracy below A's (positive: B is less accurate)
    regressed: list[str] = field(default_factory=list)


def load_side(label: str, path: Path) -> tuple[Side, results.Results]:
    with select.no_results_warning():  # the error below says it, on its one line
        loaded = results.load(path, tables=("runs", "summary", "accuracy"))
    if loaded.runs.empty:
        raise CompareError(f"{label} = '{path}': no results (no tables/runs.parquet below it); pass a run or sweep "
                           f"directory")
    return Side(label, path), loaded


def judge_side(side: Side, loaded: results.Results, rule: select.Rule) -> Side:
    runs = {r.run_id: r for r in loaded.runs.drop_duplicates("run_id").itertuples(index=False)}
    started: dict[str, str] = {}
    for point in select.points(loaded, rule):
        run = runs[point.run_id]
        key = str(run.config_hash)
        if key in side.points:
            side.repeated += 1
            if str(run.started) < started[key]:
                continue  # an older run of the same config: the latest one counts
        side.points[key], started[key] = point, str(run.started)
        side.jobs[key] = f"job {run.job}" if pd.notna(run.job) else str(point.run_id)
    return side


def pair(a: select.Point, b: select.Point, rule: select.Rule, tolerance: float) -> Pair:
    p = Pair(a, b)
    if a.status != "ok":
        return p  # nothing to regress from
    if b.status != "ok":
        p.regressed.append(f"B is {b.status} where A was ok" + (f" ({b.why})" if b.why != b.status else ""))
        return p
    if a.value is not None and b.value is not None:
        p.worse = select.worse_pct(rule, a.value, b.value)
        p.noise = select.combined_noise(a, b)
        noise = p.noise.pct if p.noise is not None else 0.0
        if p.worse > tolerance and p.worse > noise:
            p.regressed.append(f"{select.pct(p.worse)} {'lower' if rule.higher_is_better else 'slower'}, beyond "
                               f"the tolerance {tolerance:g}% and the noise ±{select.pct(noise)}")
    if a.kind == "top-1" and b.kind == "top-1":
        p.accuracy_loss = a.top1 - b.top1
    elif a.kind == b.kind and a.drop is not None and b.drop is not None:
        p.accuracy_loss = b.drop - a.drop
    # a regression is a change: top-1 points or rel_l2_err, both held to max_accuracy_drop (max_relative_error
    # bounds an error's size, not how much it may grow)
    if p.accuracy_loss is not None and p.accuracy_loss > rule.max_accuracy_drop:
        p.regressed.append(f"{a.kind} {p.accuracy_loss:.3g} less accurate, beyond "
                           f"select.max_accuracy_drop={rule.max_accuracy_drop:g}")
    return p


def compare(path_a: Path, path_b: Path, tolerance: float = DEFAULT_TOLERANCE, metric: str | None = None,
            max_accuracy_drop: float | None = None) -> tuple[list[Pair], Side, Side, select.Rule]:
    side_a, loaded_a = load_side("A", path_a)
    side_b, loaded_b = load_side("B", path_b)
    rule = select.rule_of(loaded_a.runs)
    rule = select.Rule(metric if metric is not None else rule.metric,
                       max_accuracy_drop if max_accuracy_drop is not None else rule.max_accuracy_drop,
                       rule.max_relative_error)
    name, stat = rule.key
    measured = pd.concat([loaded_a.summary, loaded_b.summary])
    if not ((measured["metric"] == name) & (measured["stat"] == stat)).any():
        have = sorted({f"{m}/{s}" for m, s in zip(measured["metric"], measured["stat"])})
        raise select.SelectError(f"select.metric = '{rule.metric}' is in neither side's summary; measured: "
                                 f"{', '.join(have[:12]) or 'nothing'}")
    judge_side(side_a, loaded_a, rule)
    judge_side(side_b, loaded_b, rule)
    pairs = [pair(side_a.points[k], side_b.points[k], rule, tolerance) for k in side_a.points if k in side_b.points]
    if not pairs:
        raise CompareError(f"no job of A ({path_a}) has the config of a job of B ({path_b}): nothing to compare "
                           f"(jobs pair by config_hash; A has {len(side_a.points)}, B {len(side_b.points)})")
    return pairs, side_a, side_b, rule


def render(pairs: list[Pair], side_a: Side, side_b: Side, rule: select.Rule, tolerance: float) -> str:
    better = "higher" if rule.higher_is_better else "lower"
    lines = [f"A: {side_a.path}   B: {side_b.path}   {len(pairs)} pair(s) by config_hash; {rule.metric} "
             f"({better} is better), tolerance {tolerance:g}%, select.max_accuracy_drop={rule.max_accuracy_drop:g}"]
    rows = [{"point": p.a.name, "A": _value(p.a), "B": _value(p.b),
             "change": _change(p.worse),
             "noise": "-" if p.noise is None else f"±{select.pct(p.noise.pct)}",
             "CoV A / B": f"{_cov(p.a)} / {_cov(p.b)}", "accuracy A -> B": _accuracy(p),
             "verdict": "REGRESSED" if p.regressed else "ok"} for p in pairs]
    lines.append(pd.DataFrame(rows).to_string(index=False))
    for side, other in ((side_a, side_b), (side_b, side_a)):
        alone = [f"{side.points[k].name} ({side.jobs[k]})" for k in side.points if k not in other.points]
        if alone:
            more = f" and {len(alone) - UNPAIRED_SHOWN} more" if len(alone) > UNPAIRED_SHOWN else ""
            lines.append(f"only in {side.label} (unpaired, {len(alone)}): {', '.join(alone[:UNPAIRED_SHOWN])}{more}")
        if side.repeated:
            lines.append(f"{side.label}: {side.repeated} older run(s) of a config that ran again were left out "
                         f"(the latest counts)")
    bad = [p for p in pairs if p.regressed]
    if bad:
        lines.append(f"regressed: {len(bad)} of {len(pairs)} pair(s): "
                     + "; ".join(f"{p.a.name}: {', '.join(p.regressed)}" for p in bad))
    else:
        lines.append(f"no regression: {len(pairs)} pair(s) within the tolerance, the noise and "
                     f"select.max_accuracy_drop")
    return "\n".join(lines)


def _change(worse: float | None) -> str:
    if worse is None:
        return "-"
    if abs(worse) < 0.05:
        return "same"
    return f"{select.pct(worse)} worse" if worse > 0 else f"{select.pct(-worse)} better"


def _value(p: select.Point) -> str:
    if p.status != "ok":
        return p.status
    return "-" if p.value is None else f"{p.value:.4g} {p.unit}".strip()


def _cov(p: select.Point) -> str:
    return "-" if p.noise is None or p.noise.cov is None else select.pct(p.noise.cov)


def _accuracy(p: Pair) -> str:
    a, b = p.a, p.b
    if a.kind == "top-1" and b.kind == "top-1":
        return f"top-1 {a.top1:.4g} -> {b.top1:.4g}"
    if a.drop is None and b.drop is None:
        return "-"
    shown = [f"{x.drop:.2g}" if x.drop is not None else "-" for x in (a, b)]
    return f"{a.kind or b.kind} {shown[0]} -> {shown[1]}"


def _percent(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"--tolerance {text}: must be a number >= 0 (percent)")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.compare", description=__doc__.split("\n\n")[0])
    parser.add_argument("a", type=Path, help="the baseline: a run or sweep directory")
    parser.add_argument("b", type=Path, help="the candidate: a run or sweep directory")
    parser.add_argument("--tolerance", type=_percent, default=DEFAULT_TOLERANCE, metavar="PCT",
                        help=f"how much worse B may be, in percent (default {DEFAULT_TOLERANCE:g})")
    parser.add_argument("--metric", help="summary metric/stat to compare (default: A's select.metric)")
    parser.add_argument("--max-accuracy-drop", type=float, help="default: A's select.max_accuracy_drop")
    args = parser.parse_args(argv)
    try:
        pairs, side_a, side_b, rule = compare(args.a, args.b, args.tolerance, args.metric, args.max_accuracy_drop)
    except (FileNotFoundError, NotADirectoryError, CompareError, select.SelectError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(render(pairs, side_a, side_b, rule, args.tolerance))
    return 1 if any(p.regressed for p in pairs) else 0


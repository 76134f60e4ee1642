"""`python -m pipeline.compare A B [--by KEYS] [--tolerance PCT] [--strict]`: is B (a run or a sweep) a regression of A?

A and B are run directories or sweep directories (anything `results.load` reads). Their jobs are paired by
`config_hash`: the resolved config less what never changes a result (pipeline/run/job.py NEVER_CHANGES_RESULT: the
cache, the output directories, isolation, report and select settings), so a sweep pairs point by point with a
rerun of itself wherever it wrote. `--by precision,batch_size` pairs by those swept values instead (any config key:
the runs column, the override or the resolved config gives a job's value), and names the other settings in which
paired jobs differ (benchmark.trials 1 -> 3). Each pair shows select.metric on both sides, B's change, the noise
(pipeline/analysis/noise.py: both medians' measured 95 % intervals, or the spread of a side's repeated runs of the
point), and the accuracy of both against fp32 (top-1 on labelled data, else rel_l2_err of the first output).

Before a speed difference is called a regression, the pair's conditions are checked (pipeline/analysis/comparable.py:
GPU, driver, CUDA, framework versions, SM clock, power cap, throttling, CPU model and load): a pair measured under
different ones is "not comparable: <why>", which by itself does not fail the comparison (`--strict` makes it). For
a point slower than its baseline beyond the tolerance, the per-layer difference (pipeline/analysis/layer_diff.py)
says where the time went, where both sides profiled.

Exit status 1 when any comparable pair regressed: B worse than A by more than --tolerance AND by more than the
noise; B less accurate than A by more than select.max_accuracy_drop; or B not ok where A was (and, with --strict,
when any pair is not comparable). 0 otherwise (a sweep compared with itself gives 0). 2 for a path without results,
nothing paired, a --by key no job has, or a select.metric no run measured. select.* comes from A's recorded configs
unless --metric / --max-accuracy-drop say otherwise.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from pipeline import results
from pipeline.analysis import comparable, layer_diff, noise, select
from pipeline.analysis.sweeps import swept_values
from pipeline.config import schema

DEFAULT_TOLERANCE = 5.0  # percent
UNPAIRED_SHOWN = 20      # unpaired jobs named one by one; the rest are counted
DIFFERING_SHOWN = 8      # other settings that differ between paired jobs


class CompareError(Exception):
    """Nothing to compare: the one line says why."""


@dataclass
class Side:
    label: str                   # "A" or "B"
    path: Path
    points: dict[Any, select.Point] = field(default_factory=dict)  # pairing key -> the latest run with it
    jobs: dict[Any, str] = field(default_factory=dict)             # pairing key -> "job 3" (where it is)
    rows: dict[Any, dict] = field(default_factory=dict)            # pairing key -> that run's runs row
    values: dict[Any, list[float]] = field(default_factory=dict)   # pairing key -> every run's value (repeats)
    repeated: int = 0            # runs left out because a later run has the same config
    loaded: results.Results | None = None


@dataclass
class Pair:
    a: select.Point
    b: select.Point
    worse: float | None = None           # percent, positive: B is worse
    noise: noise.Noise | None = None
    accuracy_loss: float | None = None   # B's accuracy below A's (positive: B is less accurate)
    slower: str | None = None            # B worse beyond the tolerance and the noise: a regression where comparable
    regressed: list[str] = field(default_factory=list)  # less accurate, or not ok: whatever the conditions
    not_comparable: list[str] = field(default_factory=list)  # why the conditions differ
    settings: dict[str, tuple] = field(default_factory=dict)  # other config keys that differ: key -> (A, B)
    layers: list[str] = field(default_factory=list)           # where B's extra time went

    @property
    def regressions(self) -> list[str]:
        return self.regressed + ([self.slower] if self.slower and not self.not_comparable else [])

    @property
    def verdict(self) -> str:
        if self.regressions:
            return "REGRESSED"
        return "not comparable" if self.not_comparable else "ok"


def load_side(label: str, path: Path) -> tuple[Side, results.Results]:
    with select.no_results_warning():  # the error below says it, on its one line
        loaded = results.load(path, tables=("runs", "summary", "accuracy", "layers"))
    if loaded.runs.empty:
        raise CompareError(f"{label} = '{path}': no results (no tables/runs.parquet below it); pass a run or sweep "
                           f"directory")
    return Side(label, path, loaded=loaded), loaded


# --------------------------------------------------------------------------- pairing


def by_keys(text: str | None) -> tuple[str, ...]:
    """'precision,batch_size' -> ('precision', 'batch_size')."""
    if text is None:
        return ()
    keys = tuple(k.strip() for k in text.split(","))
    if not all(keys):
        raise CompareError(f"--by '{text}': expected swept keys separated by commas, e.g. precision,batch_size")
    return keys


def _config(text) -> dict:
    try:
        parsed = yaml.safe_load(text) if isinstance(text, str) else None
    except yaml.YAMLError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _overrides(run) -> dict[str, str]:
    text = run.overrides if isinstance(getattr(run, "overrides", None), str) else ""
    return {k.lstrip("+~"): v for k, _, v in (item.partition("=") for item in text.split())}


def key_value(run, key: str, config: dict) -> str | None:
    """A job's value of a config key: its runs column, else its override, else its resolved config (a scalar)."""
    column = results.column_of(key)
    value = getattr(run, column, None) if column in run._fields else None
    if value is not None and not (pd.api.types.is_scalar(value) and pd.isna(value)):
        return str(value.item() if hasattr(value, "item") else value)
    if key in _overrides(run):
        return _overrides(run)[key]
    found = schema.lookup(config, key)
    return None if found is None or isinstance(found, (dict, list)) else str(found)


def judge_side(side: Side, loaded: results.Results, rule: select.Rule, by: tuple[str, ...] = ()) -> Side:
    runs = {r.run_id: r for r in loaded.runs.drop_duplicates("run_id").itertuples(index=False)}
    rows = {r["run_id"]: r for r in loaded.runs.drop_duplicates("run_id").to_dict("records")}
    recorded = noise.recorded(loaded.summary, loaded.runs)
    started: dict[Any, str] = {}
    hashes: dict[Any, tuple[str, dict]] = {}
    for point in select.points(loaded, rule):
        run = runs[point.run_id]
        point.noise = recorded.get(point.run_id, point.noise)  # measured, where the run recorded it
        key: Any = str(run.config_hash)
        if by:
            config = _config(run.config)
            values = tuple(key_value(run, k, config) for k in by)
            missing = [k for k, v in zip(by, values) if v is None]
            if missing:
                swept = ", ".join(swept_values(loaded.runs).columns) or "none"
                raise CompareError(f"--by {missing[0]}: {side.label}'s {point.name or point.run_id} has no value for "
                                   f"it; keys swept in {side.label}: {swept}")
            key = values
            if key in hashes and hashes[key][0] != str(run.config_hash):
                differ = ", ".join(list(settings_differ(hashes[key][1], config))[:DIFFERING_SHOWN]) or "its config"
                raise CompareError(f"--by {','.join(by)}: {side.label} has several jobs with "
                                   f"{_key_text(by, key)} that differ in {differ}; add the swept ones to --by")
            hashes.setdefault(key, (str(run.config_hash), config))
        side.values.setdefault(key, []).append(point.value)
        if key in side.points:
            side.repeated += 1
            if str(run.started) < started[key]:
                continue  # an older run of the same config: the latest one counts
        side.points[key], started[key], side.rows[key] = point, str(run.started), rows[point.run_id]
        side.jobs[key] = f"job {run.job}" if pd.notna(run.job) else str(point.run_id)
    return side


def _key_text(by: tuple[str, ...], key: tuple) -> str:
    return " ".join(f"{k}={v}" for k, v in zip(by, key))


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: node}


def settings_differ(a: dict, b: dict) -> dict[str, tuple]:
    """Config keys whose values differ between two resolved configs (not the DAG's copies of them, nor the keys
    that never change a result): key -> (A's value, B's value)."""
    fa, fb = _flatten(a), _flatten(b)
    skip = (*results.NEVER_CHANGES_RESULT, "hydra", "backend.dag", "feeds")
    return {k: (fa.get(k), fb.get(k)) for k in sorted(set(fa) | set(fb))
            if fa.get(k) != fb.get(k) and not any(k == s or k.startswith(s + ".") for s in skip)}


# --------------------------------------------------------------------------- judging a pair


def pair(a: select.Point, b: select.Point, rule: select.Rule, tolerance: float,
         spreads: list[tuple[float, int]] = ()) -> Pair:
    p = Pair(a, b)
    if a.status != "ok":
        return p  # nothing to regress from
    if b.status != "ok":
        p.regressed.append(f"B is {b.status} where A was ok" + (f" ({b.why})" if b.why != b.status else ""))
        return p
    if a.value is not None and b.value is not None:
        p.worse = select.worse_pct(rule, a.value, b.value)
        p.noise = noise.between(a.noise, b.noise, spreads)
        floor = p.noise.pct if p.noise is not None else 0.0
        if p.worse > tolerance and p.worse > floor:
            p.slower = (f"{select.pct(p.worse)} {'lower' if rule.higher_is_better else 'slower'}, beyond "
                               f"the tolerance {tolerance:g}% and the noise ±{select.pct(floor)}")
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


def _spreads(*sides_values: list[float]) -> list[tuple[float, int]]:
    out = []
    for values in sides_values:
        spread = noise.spread_pct(values)
        if spread is not None:
            out.append((spread, len(values)))
    return out


def _explain(p: Pair, side_a: Side, side_b: Side, tolerance: float) -> list[str]:
    """Where B's time went, for a point slower than A beyond the tolerance, from both sides' layers tables."""
    if p.worse is None or p.worse <= tolerance:
        return []
    la, lb = (s.loaded.layers[s.loaded.layers["run_id"] == x.run_id] if s.loaded is not None else pd.DataFrame()
              for s, x in ((side_a, p.a), (side_b, p.b)))
    if la.empty or lb.empty:
        return []
    return layer_diff.render(layer_diff.diff(la, lb))


def compare(path_a: Path, path_b: Path, tolerance: float = DEFAULT_TOLERANCE, metric: str | None = None,
            max_accuracy_drop: float | None = None, by: tuple[str, ...] = ()
            ) -> tuple[list[Pair], Side, Side, select.Rule]:
    side_a, loaded_a = load_side("A", path_a)
    side_b, loaded_b = load_side("B", path_b)
    rule = select.rule_of(loaded_a.runs)
    # the sweep's own rule (confidence, agreement, task bound...), with what the command line overrides
    rule = dataclasses.replace(rule, metric=metric if metric is not None else rule.metric,
                               max_accuracy_drop=max_accuracy_drop if max_accuracy_drop is not None
                               else rule.max_accuracy_drop)
    name, stat = rule.key
    measured = pd.concat([loaded_a.summary, loaded_b.summary])
    if not ((measured["metric"] == name) & (measured["stat"] == stat)).any():
        have = sorted({f"{m}/{s}" for m, s in zip(measured["metric"], measured["stat"])})
        raise select.SelectError(f"select.metric = '{rule.metric}' is in neither side's summary; measured: "
                                 f"{', '.join(have[:12]) or 'nothing'}")
    judge_side(side_a, loaded_a, rule, by)
    judge_side(side_b, loaded_b, rule, by)
    pairs = []
    for k in side_a.points:
        if k not in side_b.points:
            continue
        p = pair(side_a.points[k], side_b.points[k], rule, tolerance, _spreads(side_a.values[k], side_b.values[k]))
        p.not_comparable = comparable.differences(side_a.rows[k], side_b.rows[k])
        if by:
            p.settings = settings_differ(*(_config(s.rows[k].get("config")) for s in (side_a, side_b)))
        p.layers = _explain(p, side_a, side_b, tolerance)
        pairs.append(p)
    if not pairs:
        how = f"--by {','.join(by)}" if by else "config_hash"
        raise CompareError(f"no job of A ({path_a}) has the {'values' if by else 'config'} of a job of B ({path_b}): "
                           f"nothing to compare (jobs pair by {how}; A has {len(side_a.points)}, "
                           f"B {len(side_b.points)})" + ("" if by else "; --by KEYS pairs by swept values"))
    return pairs, side_a, side_b, rule


def failed(pairs: list[Pair], strict: bool = False) -> bool:
    """Exit status 1? A pair regressed (slower only counts where comparable); with strict, a pair not comparable."""
    return any(p.regressions or (strict and p.not_comparable) for p in pairs)


# --------------------------------------------------------------------------- output


def render(pairs: list[Pair], side_a: Side, side_b: Side, rule: select.Rule, tolerance: float,
           by: tuple[str, ...] = ()) -> str:
    better = "higher" if rule.higher_is_better else "lower"
    how = ",".join(by) if by else "config_hash"
    lines = [f"A: {side_a.path}   B: {side_b.path}   {len(pairs)} pair(s) by {how}; {rule.metric} "
             f"({better} is better), tolerance {tolerance:g}%, select.max_accuracy_drop={rule.max_accuracy_drop:g}"]
    rows = [{"point": _key_text(by, k) if by else p.a.name, "A": _value(p.a), "B": _value(p.b),
             "change": _change(p.worse),
             "noise": "-" if p.noise is None else f"±{select.pct(p.noise.pct)}",
             "CoV A / B": f"{_cov(p.a)} / {_cov(p.b)}", "accuracy A -> B": _accuracy(p),
             "verdict": p.verdict} for k, p in zip(_keys(pairs, side_a), pairs)]
    lines.append(pd.DataFrame(rows).to_string(index=False))
    differing: dict[str, set] = {}
    for p in pairs:
        for key, values in p.settings.items():
            differing.setdefault(key, set()).add(values)
    if differing:
        shown = [f"{k} {' | '.join(f'{_plain(a)} -> {_plain(b)}' for a, b in sorted(v, key=str))}"
                 for k, v in list(differing.items())[:DIFFERING_SHOWN]]
        more = f" and {len(differing) - DIFFERING_SHOWN} more" if len(differing) > DIFFERING_SHOWN else ""
        lines.append(f"other settings that differ between paired jobs: {'; '.join(shown)}{more}")
    for p in pairs:
        name = p.a.name
        if p.not_comparable:
            lines.append(f"{name}: {comparable.text(p.not_comparable)}"
                         + (f" (B {_change(p.worse)}: not called a regression)" if p.slower else ""))
        if p.noise is not None and p.worse is not None and abs(p.worse) > tolerance:
            lines.append(f"{name}: noise {p.noise.text}")
        if p.layers:
            lines += [f"{name}: {p.layers[0]}", *p.layers[1:]]
    for side, other in ((side_a, side_b), (side_b, side_a)):
        alone = [f"{side.points[k].name} ({side.jobs[k]})" for k in side.points if k not in other.points]
        if alone:
            more = f" and {len(alone) - UNPAIRED_SHOWN} more" if len(alone) > UNPAIRED_SHOWN else ""
            lines.append(f"only in {side.label} (unpaired, {len(alone)}): {', '.join(alone[:UNPAIRED_SHOWN])}{more}")
        if side.repeated:
            lines.append(f"{side.label}: {side.repeated} older run(s) of a config that ran again were left out "
                         f"(the latest counts; their spread counts as noise)")
    bad = [p for p in pairs if p.regressions]
    unsure = [p for p in pairs if p.not_comparable and not p.regressions]
    if bad:
        lines.append(f"regressed: {len(bad)} of {len(pairs)} pair(s): "
                     + "; ".join(f"{p.a.name}: {', '.join(p.regressions)}" for p in bad))
    else:
        lines.append(f"no regression: {len(pairs) - len(unsure)} pair(s) within the tolerance, the noise and "
                     f"select.max_accuracy_drop" + (f"; {len(unsure)} not comparable" if unsure else ""))
    return "\n".join(lines)


def _keys(pairs: list[Pair], side_a: Side) -> list:
    where = {id(point): k for k, point in side_a.points.items()}
    return [where[id(p.a)] for p in pairs]


def _plain(value) -> str:
    return "-" if value is None else str(value)


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
    parser.add_argument("--by", metavar="KEYS", help="pair jobs by these swept keys (comma-separated) instead of "
                                                     "their whole config, e.g. precision,batch_size")
    parser.add_argument("--tolerance", type=_percent, default=DEFAULT_TOLERANCE, metavar="PCT",
                        help=f"how much worse B may be, in percent (default {DEFAULT_TOLERANCE:g})")
    parser.add_argument("--metric", help="summary metric/stat to compare (default: A's select.metric)")
    parser.add_argument("--max-accuracy-drop", type=float, help="default: A's select.max_accuracy_drop")
    parser.add_argument("--strict", action="store_true",
                        help="exit 1 also when a pair ran under conditions that differ (not comparable)")
    args = parser.parse_args(argv)
    try:
        by = by_keys(args.by)
        pairs, side_a, side_b, rule = compare(args.a, args.b, args.tolerance, args.metric, args.max_accuracy_drop,
                                              by)
    except (FileNotFoundError, NotADirectoryError, CompareError, select.SelectError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(render(pairs, side_a, side_b, rule, args.tolerance, by))
    return 1 if failed(pairs, args.strict) else 0

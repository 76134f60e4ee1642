"""The precision planner's analysis (no job runs here: pipeline/run/planner.py runs the variants): which quantized
layers to try in high precision first, what each costs, and the plan that meets select.* at the lowest latency.

The cheap proxy is the error a layer adds (`layer_errors`: its output's relative error against fp32 less the
largest its inputs already had); its cost, from the `layers` tables, is the time its high-precision kernel takes
in the fp32 build less its quantized kernel's and its Q/DQ nodes' in the quantized build. Both only order the
candidates: every plan is built, validated and measured before it is named.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from pipeline.analysis import select

PLAN_FILE = "plan.json"  # <sweep_dir>/plan.json: the plan, the points it was weighed against, the candidates
PLAN_SWEEP = "plan"      # the runs' `sweep` of the planner's variants (jobs under <sweep_dir>/plan/)


def ranking(layer_errors: pd.DataFrame, run_id: str) -> pd.DataFrame:
    """The quantized layers of run `run_id`, one row each (layer, op_type, depth, rel_err, added, qdq_nodes), the
    one that adds the most error first."""
    rows = layer_errors[(layer_errors["run_id"] == run_id) & layer_errors["quantized"].fillna(False).astype(bool)]
    if rows.empty:
        return pd.DataFrame(columns=["layer", "op_type", "depth", "rel_err", "added", "qdq_nodes"])
    rows = rows.assign(added=(rows["rel_err"] - rows["input_rel_err"]).clip(lower=0.0))
    per_layer = rows.groupby("layer", sort=False).agg(
        op_type=("op_type", "first"), depth=("depth", "min"), rel_err=("rel_err", "max"), added=("added", "max"),
        qdq_nodes=("qdq_nodes", "first")).reset_index()
    return per_layer.sort_values(["added", "depth"], ascending=[False, True], kind="stable").reset_index(drop=True)


def _profile_names(name: str) -> set[str]:
    """The graph nodes a profiler's layer row may stand for: a fused kernel names them with a prefix or joined by
    '+' ('fused node_linear', 'a + b')."""
    return {token for token in re.split(r"\s*\+\s*|\s+", str(name)) if token} | {str(name)}


def layer_costs(layers: pd.DataFrame, ranked: pd.DataFrame, quantized_run: str, reference_run: str | None
                ) -> pd.Series:
    """Per ranked layer, the time (ms per inference) that keeping it in high precision is estimated to add:
    its kernel's time in the reference (fp32) build less its kernel's and its Q/DQ nodes' in the quantized one
    (negative: keeping it saves time). NaN where a profile does not name it."""
    def times(run_id):
        rows = layers[layers["run_id"] == run_id] if run_id is not None else layers.iloc[0:0]
        out: dict[str, float] = {}
        for name, ms in zip(rows["layer"], rows["time_ms"]):
            for node in _profile_names(name):
                out[node] = out.get(node, 0.0) + float(ms)
        return out

    quantized, reference = times(quantized_run), times(reference_run)
    costs = []
    for layer, qdq in zip(ranked["layer"], ranked["qdq_nodes"]):
        if layer not in quantized or layer not in reference:
            costs.append(math.nan)
            continue
        overhead = sum(quantized.get(n, 0.0) for n in str(qdq or "").split(",") if n)
        costs.append(reference[layer] - quantized[layer] - overhead)
    return pd.Series(costs, index=ranked.index, name="est_cost_ms", dtype="float64")


@dataclass
class Option:
    """One build the plan weighs: a uniform precision or a mixed one (the layers it keeps in high precision)."""
    name: str
    run_id: str
    precision: str
    keep: list[str] = field(default_factory=list)
    latency: float | None = None
    unit: str = ""
    drop: float | None = None
    kind: str = ""
    feasible: bool = False
    why: str | None = None


@dataclass(frozen=True)
class KeepKey:
    """Where a point lists the layers it keeps in high precision, as the backend's layer comparison stage declares
    it (its PLAN_KEEP): `paths[0]` the key an override sets, the others where a resolved config holds it too; and
    what the quantized point keeps already (`base`), which every variant keeps as well."""
    paths: tuple[str, ...]
    base: tuple[str, ...] = ()
    present: bool = False  # the key is in the quantized point's config: set without Hydra's `+`

    def values(self, keep: list[str]) -> list[str]:
        return [*self.base, *(k for k in keep if k not in self.base)]

    def override(self, keep: list[str]) -> str:
        """The command-line override that makes a point keep `keep` in high precision."""
        return (("" if self.present else "+") + f"{self.paths[0]}=["
                + ",".join(json.dumps(k) for k in self.values(keep)) + "]")

    def apply(self, config: dict, keep: list[str]) -> None:
        """Set every path of a resolved `config` to what the point keeps with `keep`."""
        for path in self.paths:
            *parents, last = path.split(".")
            node = config
            for key in parents:
                node = node.setdefault(key, {})
            node[last] = self.values(keep)

    @classmethod
    def of(cls, config: dict, paths: tuple[str, ...]) -> KeepKey:
        """The key at `paths` with what `config` (the quantized point's) keeps there already."""
        node, present = config, True
        for key in paths[0].split("."):
            if not isinstance(node, dict) or key not in node:
                node, present = None, False
                break
            node = node[key]
        return cls(tuple(paths), tuple(node or ()), present)


@dataclass
class Plan:
    base: str                          # the quantized run the plan starts from
    precision: str
    rule: dict
    options: list[Option]
    plan: Option | None                # the fastest mixed build within the bound; None if none is
    best_uniform: Option | None        # the fastest uniform build within the bound
    candidates: list[dict]
    keep_key: KeepKey | None = None    # where the plan's layers go (None: it cannot be written as an override)

    @property
    def beats_uniform(self) -> bool:
        return (self.plan is not None and self.plan.latency is not None and
                (self.best_uniform is None or self.best_uniform.latency is None or
                 self.plan.latency < self.best_uniform.latency))

    def override(self) -> str | None:
        return None if self.plan is None or self.keep_key is None else self.keep_key.override(self.plan.keep)

    def line(self) -> str:
        bound = f"{self.rule['key']}={self.rule['limit']:g}"
        if self.plan is None:
            return (f"plan: none: no set of the {len(self.candidates)} candidate layers tried brings "
                    f"{self.precision} within {bound}")
        p, u = self.plan, self.best_uniform
        head = (f"plan: {self.precision} with {', '.join(p.keep)} in high precision: {p.kind} {p.drop:.4g} "
                f"(within {bound}), {self.rule['metric']} {p.latency:.4g} {p.unit}")
        if u is None:
            return head + "; no uniform precision is within the bound"
        verdict = "beats" if self.beats_uniform else "does NOT beat"
        return head + (f"; it {verdict} the best uniform precision, {u.name} ({u.latency:.4g} {u.unit})"
                       + ("" if self.beats_uniform else ": ship that instead"))

    def to_json(self) -> dict:
        return {"base": self.base, "precision": self.precision, "rule": self.rule,
                "plan": asdict(self.plan) if self.plan else None, "override": self.override(),
                "key": self.keep_key.paths[0] if self.keep_key else None,
                "best_uniform": asdict(self.best_uniform) if self.best_uniform else None,
                "beats_uniform": self.beats_uniform, "line": self.line(),
                "options": [asdict(o) for o in self.options], "candidates": self.candidates}


def options(loaded, rule: select.Rule, keeps: dict[str, list[str]]) -> list[Option]:
    """Every ok-or-not run of `loaded` judged by `rule`: uniform ones by their precision, the planner's variants
    (`keeps`: run_id -> the layers it keeps) by what they keep."""
    out = []
    for p in select.points(loaded, rule):
        keep = keeps.get(p.run_id, [])
        name = f"{p.precision} + keep {', '.join(keep)}" if keep else p.precision
        out.append(Option(name, p.run_id, p.precision, keep, p.value, p.unit, p.drop, p.kind, p.feasible, p.why))
    return out


def choose(base: str, precision: str, rule: select.Rule, opts: list[Option], candidates: list[dict],
           keep_key: KeepKey | None = None) -> Plan:
    """The fastest feasible mixed option (the plan) and the fastest feasible uniform one, to weigh it against."""
    def fastest(pool):
        pool = [o for o in pool if o.feasible and o.latency is not None]
        return min(pool, key=lambda o: rule.objective(o.latency), default=None)

    kind = next((o.kind for o in opts if o.kind), "rel_l2_err")
    key, limit = rule.bound(kind)
    return Plan(base, precision, {"metric": rule.metric, "key": key, "limit": limit}, opts,
                fastest([o for o in opts if o.keep]), fastest([o for o in opts if not o.keep]), candidates, keep_key)


def read(sweep_dir: str | Path) -> dict | None:
    path = Path(sweep_dir) / PLAN_FILE
    return json.loads(path.read_text()) if path.is_file() else None

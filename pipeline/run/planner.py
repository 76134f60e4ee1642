"""The precision planner's loop (`python -m pipeline.plan SWEEP_DIR`, or at the end of `+plan=mixed_precision`):
from a sweep whose quantized point was compared with fp32 layer by layer (the `layer_errors` table), build and
measure variants that keep the likeliest layers in high precision, and name the plan that meets select.* at the
lowest latency (pipeline/analysis/plan.py), against the best uniform precision.

Every variant is an ordinary job (its config: the quantized point's, with the layers it keeps in high precision under
the key the backend's layer comparison stage declares, PLAN_KEEP: convert.keep_high_precision for the ONNX backends,
backend.keep_high_precision for torch; and the diagnostic nodes left out), under <sweep_dir>/plan/<n>/: cached, in the
sweep's tables, and reproducible with `python -m pipeline.reproduce`.
"""
from __future__ import annotations

import argparse
import copy
import importlib
import json
import logging
import sys
from pathlib import Path

import yaml
from hydra.experimental.callback import Callback

from pipeline import results
from pipeline.analysis import plan as planmod
from pipeline.analysis import select
from pipeline.run import job as jobmod

log = logging.getLogger(__name__)

DIAGNOSTIC_NODES = ("diagnose", "layer_errors")  # conf/plan/mixed_precision.yaml: no part of a shipped build


class PlanError(ValueError):
    """The sweep cannot be planned from (no quantized point with a layer comparison); the message says why."""


def keep_key(config: dict) -> planmod.KeepKey:
    """Where the quantized point's config lists the layers it keeps in high precision: the key its layer comparison
    stage declares (PLAN_KEEP; its layer names are what that key takes), with what the point keeps there already."""
    node = (config.get("backend", {}).get("dag") or {}).get("layer_errors") or {}
    stage = node.get("stage")
    if not stage:
        raise PlanError("the quantized point's DAG has no layer_errors node: run the sweep with +plan=mixed_precision")
    try:
        paths = getattr(importlib.import_module(str(stage)), "PLAN_KEEP", None)
    except ImportError as err:
        raise PlanError(f"the layer comparison's stage {stage} does not import ({err})") from None
    if not paths:
        raise PlanError(f"the layer comparison's stage {stage} declares no PLAN_KEEP (the config key that keeps "
                        f"its layers in high precision): backend={config['backend'].get('name')} cannot be planned")
    return planmod.KeepKey.of(config, tuple(paths))


def variant_config(config: dict, keep: list[str], key: planmod.KeepKey | None = None) -> dict:
    """The quantized point's config keeping `keep` in high precision as well, without the diagnostic nodes: the
    config `python -m pipeline ... <key.override(keep)>` composes."""
    key = key or keep_key(config)
    out = copy.deepcopy(config)
    key.apply(out, keep)
    dag = out["backend"]["dag"]
    for name in DIAGNOSTIC_NODES:
        dag.pop(name, None)
    return out


def _base_run(loaded: results.Results):
    """The quantized run to plan from: ok, with quantized layers compared (the first such, in sweep order)."""
    errors = loaded.layer_errors
    quantized = set(errors.loc[errors["quantized"].fillna(False).astype(bool), "run_id"])
    runs = loaded.runs.sort_values(["job", "run_id"], na_position="last")
    runs = runs[(runs["status"] == "ok") & runs["run_id"].isin(quantized) & (runs["sweep"] != planmod.PLAN_SWEEP)]
    if runs.empty:
        failed = loaded.runs[loaded.runs["status"] != "ok"]
        why = "".join(f"; {r.precision} is {r.status}: {str(r.error).splitlines()[0][:240]}"
                      for r in failed.itertuples() if r.error)
        raise PlanError("no ok run of the sweep has quantized layers compared with fp32 (a layer_errors table): "
                        "run it with +plan=mixed_precision, which adds the comparison to every point" + why)
    return runs.iloc[0]


def _job_dir(loaded: results.Results, run_id: str) -> Path:
    for path in sorted(Path(loaded.path).rglob(results.JOB_CONFIG)):
        runs = path.parent / results.TABLES_DIR / "runs.parquet"
        if runs.is_file() and run_id in set(results.load(path.parent, tables=("runs",)).runs["run_id"]):
            return path.parent
    raise PlanError(f"{loaded.path}: no job directory holds run {run_id}")


def plan_sweep(sweep_dir: str | Path, candidates: int = 3, out=sys.stdout) -> planmod.Plan:
    """Run the planner on a finished sweep; write <sweep_dir>/plan.json; return the plan."""
    sweep_dir = Path(sweep_dir)
    loaded = results.load(sweep_dir)
    base = _base_run(loaded)
    rule = select.rule_of(loaded.runs)
    ranked = planmod.ranking(loaded.layer_errors, base.run_id)
    fp32 = loaded.runs[(loaded.runs["precision"] == "fp32") & (loaded.runs["status"] == "ok")]
    ranked["est_cost_ms"] = planmod.layer_costs(loaded.layers, ranked, base.run_id,
                                                fp32["run_id"].iloc[0] if len(fp32) else None)
    config = yaml.safe_load((_job_dir(loaded, base.run_id) / results.JOB_CONFIG).read_text())
    key = keep_key(config)
    print(f"plan: {base.precision} ({base.run_id}): {len(ranked)} quantized layers, by the error each adds: "
          + ", ".join(f"{r.layer} (+{r.added:.3g})" for r in ranked.head(candidates).itertuples()), file=out)
    tried: dict[str, list[str]] = {}   # run_id -> the layers kept
    drops: dict[str, float] = {}       # layer -> the accuracy drop with it alone kept
    swept = loaded.runs.loc[loaded.runs["sweep"] != planmod.PLAN_SWEEP, "job"]
    first = int(swept.max()) + 1 if swept.notna().any() else 0  # the variants' job numbers follow the sweep's

    def measure(keep: list[str]) -> planmod.Option:
        num = first + len(tried)
        job_dir = sweep_dir / planmod.PLAN_SWEEP / str(num)
        cfg = variant_config(config, keep, key)
        outcome = jobmod.previous_ok(job_dir, cfg) or jobmod.run_job(
            cfg, job_dir, jobmod.JobMeta(sweep=planmod.PLAN_SWEEP, job=num, overrides=[key.override(keep)]))
        tried[outcome.run_id] = keep
        judged = planmod.options(results.load(job_dir), rule, {outcome.run_id: keep})[0]
        print(f"plan: [{num}] keep {', '.join(keep)}: {outcome.status}"
              + (f", {judged.kind} {judged.drop:.4g}, {rule.metric} {judged.latency:.4g} {judged.unit}"
                 if outcome.status == "ok" and judged.drop is not None and judged.latency is not None
                 else f" ({outcome.error})" if outcome.error else ""), file=out, flush=True)
        return judged

    top = list(ranked["layer"].head(candidates))
    for layer in top:  # each candidate alone: the accuracy it recovers, the latency it costs
        judged = measure([layer])
        drops[layer] = judged.drop if judged.drop is not None else float("inf")
    if top and not any(o.feasible for o in planmod.options(results.load(sweep_dir / planmod.PLAN_SWEEP), rule,
                                                           tried)):
        # none alone is enough: add them in the order of what each recovers, until the bound holds
        order = sorted(top, key=lambda name: drops[name])
        for n in range(2, len(order) + 1):
            if measure(order[:n]).feasible:
                break
    loaded = results.load(sweep_dir)
    opts = [o for o in planmod.options(loaded, rule, tried)
            if o.run_id in tried or (o.run_id in set(loaded.runs.loc[loaded.runs["sweep"] != planmod.PLAN_SWEEP,
                                                                        "run_id"]))]
    table = ranked.assign(tried_alone_drop=ranked["layer"].map(drops))
    chosen = planmod.choose(base.run_id, str(base.precision), rule, opts,
                            json.loads(table.to_json(orient="records")), key)
    (sweep_dir / planmod.PLAN_FILE).write_text(json.dumps(chosen.to_json(), indent=2, default=str))
    print(chosen.line(), file=out)
    if chosen.plan is not None:
        print(f"plan: as a point of its own: python -m pipeline {_command(base)} '{chosen.override()}'; "
              f"reproduce it: python -m pipeline.reproduce {sweep_dir / planmod.PLAN_SWEEP}", file=out, flush=True)
    return chosen


def _command(base) -> str:
    """The quantized point's command-line overrides, without the planner's own."""
    kept = [o for o in str(base.get("overrides") or "").split() if not o.startswith("+plan=")]
    backend = [] if any(o.startswith("backend=") for o in kept) else [f"backend={base.backend}"]
    return " ".join(backend + kept)


class PlanCallback(Callback):
    """At the end of a `+plan=mixed_precision` sweep: the planner's loop on it. Hydra ends callbacks in reverse
    order, so this runs before the sweep's summary, selection and report, which then include the variants."""

    def __init__(self, candidates: int = 3):
        self.candidates = int(candidates)

    def on_multirun_end(self, config, **kwargs) -> None:
        try:
            plan_sweep(Path(config.hydra.sweep.dir), self.candidates)
        except PlanError as err:
            print(f"plan: none: {err}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.plan", description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path)
    parser.add_argument("--candidates", type=int, default=3,
                        help="quantized layers confirmed by a build of their own (default 3)")
    args = parser.parse_args(argv)
    if args.candidates < 1:
        print(f"error: --candidates = {args.candidates}: must be at least 1", file=sys.stderr)
        return 2
    try:
        chosen = plan_sweep(args.sweep_dir, args.candidates)
    except PlanError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0 if chosen.plan is not None else 1

"""The fastest build on this GPU with the torch backend: bf16 / fp16 against every int8 and fp8 recipe (torchao),
composed with torch.compile, through the CLI as a user runs it (+sweep=gpu_precision).

    python benchmarks/torch_lowp.py --quick [--out docs/benchmarks/torch_lowp.json]      # about 8 minutes on an H200
    python benchmarks/torch_lowp.py [--only vit_b16:bf16+fp8_static,warm] [--budget-s 1800] [--duration 2]

Groups, each one Hydra multirun of the CLI (one process), in order of what the answer needs first:
- vit_l16, vit_b16: batch 128, bf16 and the recipes, backend.compile=default;
- warm: one compiled fp8 point of vit_b16 run again through the CLI, timed end to end (wall seconds), its compile
  served by torch.compile's caches under cache.dir/shared/torchinductor; the run before it is the cold one (in the
  vit_b16 group, or run here first when that group was left out);
- resnet50: batch 128, fp16 channels_last and its recipes (1x1 convolutions quantized as Linear), compile=default;
- autotune: the best point of each model group again with backend.compile=max-autotune (with --quick only where
  the budget still has room for it).
--quick keeps bf16 / fp16, fp8_dynamic_rowwise (ViTs) and int8_dynamic (vit_b16, resnet50). A group whose estimated
cost no longer fits --budget-s is skipped and listed as such; a group still running past it is stopped (its finished
points are kept). Results are written as they come (JSON, and a Markdown table beside it), so a run cut off keeps
what it measured.

Per point: median GPU compute time (ms), speedup over the model's baseline (bf16; fp16 channels_last for resnet50)
at the same compile mode, output cosine against the fp32 model, median SM clock, power cap, the throttle reasons
seen while timing, energy per inference (mJ; NVML's energy counter over the timed loop), peak GPU memory while
timing, the compile's first call (s) and whether it hit the compile cache.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.gpu_fidelity import _args_without_out  # noqa: E402 - the command as recorded, without --out

RECIPES = ["fp8_dynamic_rowwise", "fp8_dynamic_tensorwise", "fp8_static", "int8_dynamic", "int8_static",
           "int8_weight_only"]
QUICK = {"vit_l16": ["bf16", "fp8_dynamic_rowwise"], "vit_b16": ["bf16", "fp8_dynamic_rowwise", "int8_dynamic"],
         "resnet50": ["fp16", "int8_dynamic"]}
WARM_POINT = ("vit_b16", "fp8_dynamic_rowwise")
# seconds a point costs, compile included (cold caches), to decide what fits the budget; max-autotune: x3
COST = {"vit_l16": (60, 130), "vit_b16": (30, 60), "resnet50": (35, 50)}  # (baseline, recipe)
STARTUP_S = 20  # a CLI process: imports, the model's weights, the report at the end


@dataclass
class Group:
    name: str
    model: str
    points: list[str]
    baseline: str
    compile: str = "default"
    extra: list[str] = field(default_factory=list)
    batch_size: int = 128

    def estimate(self) -> float:
        base, recipe = COST[self.model]
        factor = 3 if self.compile == "max-autotune" else 1
        return STARTUP_S + factor * sum(base if p == self.baseline else recipe for p in self.points)


def plan(quick: bool, only: dict[str, list[str] | None]) -> list[Group]:
    groups = [Group("vit_l16", "vit_l16", ["bf16", *RECIPES], "bf16"),
              Group("vit_b16", "vit_b16", ["bf16", *RECIPES], "bf16"),
              Group("warm", WARM_POINT[0], [WARM_POINT[1]], "bf16"),
              Group("resnet50", "resnet50", ["fp16", *RECIPES], "fp16", extra=["backend.channels_last=true"])]
    for g in groups:
        if quick and g.name in QUICK:
            g.points = list(QUICK[g.name])
        if only and g.name in only and only[g.name]:
            g.points = [p for p in only[g.name]]
    return [g for g in groups if not only or g.name in only]


def parse_only(text: str | None) -> dict[str, list[str] | None]:
    out: dict[str, list[str] | None] = {}
    for item in filter(None, (text or "").split(",")):
        name, _, points = item.partition(":")
        out[name] = points.split("+") if points else None
    return out


class Runner:
    """Runs the groups' CLI multiruns, collects their tables as they finish, writes JSON and Markdown."""

    def __init__(self, args):
        self.args, self.out = args, args.out
        self.sweeps = args.out.parent / (args.out.stem + "_sweeps")
        self.started = time.monotonic()
        self.report = {"command": "python benchmarks/torch_lowp.py " + " ".join(_args_without_out(sys.argv[1:])),
                       "started": dt.datetime.now().isoformat(timespec="seconds"), "budget_s": args.budget_s,
                       "results": [], "warm_rerun": None, "skipped": [], "groups": []}
        self.child: subprocess.Popen | None = None
        self.stopped = False

    def left_s(self) -> float:
        return self.args.budget_s - (time.monotonic() - self.started)

    def cli(self, overrides: list[str], sweep_dir: Path | None) -> tuple[int, float]:
        command = [sys.executable, "-m", "pipeline", *with_set(overrides, self.args.set)]
        if sweep_dir is not None:
            command.append(f"hydra.sweep.dir={sweep_dir}")
        print("$ " + " ".join(command[1:]), flush=True)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
        started = time.monotonic()
        self.child = subprocess.Popen(command, cwd=ROOT, env=env)
        while True:
            try:
                rc = self.child.wait(timeout=10)
                break
            except subprocess.TimeoutExpired:
                self.collect()
                if self.left_s() < 0 and not self.stopped:
                    print("budget spent: stopping the running group (its finished points are kept)", flush=True)
                    self.stop()
        self.child = None
        return rc, time.monotonic() - started

    def stop(self) -> None:
        self.stopped = True
        if self.child is not None and self.child.poll() is None:
            self.child.send_signal(signal.SIGTERM)  # the pipeline records the point it is on, and the rest as not run

    def group(self, g: Group) -> None:
        if self.stopped:
            self.report["skipped"].append({"group": g.name, "why": "stopped"})
            return
        if g.estimate() > self.left_s():
            self.report["skipped"].append({"group": g.name, "points": g.points, "why":
                                           f"budget: about {g.estimate():.0f} s needed, {self.left_s():.0f} s left"})
            print(f"skipping {g.name}: {self.report['skipped'][-1]['why']}", flush=True)
            self.write()
            return
        overrides = ["+sweep=gpu_precision", "backend=torch", f"model={g.model}", f"batch_size={g.batch_size}",
                     f"backend.compile={g.compile}", f"backend.point={','.join(g.points)}", *g.extra,
                     *self.settings()]
        rc, wall = self.cli(overrides, self.sweeps / g.name)
        self.report["groups"].append({"group": g.name, "points": g.points, "compile": g.compile, "rc": rc,
                                      "wall_s": round(wall, 1)})
        self.collect()

    def settings(self) -> list[str]:
        return [f"benchmark.duration_s={self.args.duration}", "benchmark.warmup_ms=500", "validate.batches=2",
                "profile.enabled=false"]

    def warm(self, g: Group) -> None:
        """A compiled fp8 point through the CLI again; the wall time of that second run, end to end."""
        model, point = g.model, g.points[0]
        overrides = ["backend=torch", f"model={model}", "batch_size=128", "backend.compile=default",
                     f"precision={point.split('_')[0]}", f"backend.quantization={point}", *self.settings()]
        cold = next((r for r in self.report["results"] if (r["model"], r["point"], r["compile"]) ==
                     (model, point, "default") and r["status"] == "ok"), None)
        entry = {"model": model, "point": point, "batch_size": 128}
        if cold is None:  # its group did not run it: a cold run first
            if self.left_s() < COST[model][1] * 2 + STARTUP_S:
                self.report["skipped"].append({"group": "warm", "why": "budget"})
                return
            rc, wall = self.cli(overrides, None)
            entry.update(cold_wall_s=round(wall, 1), cold_rc=rc, cold=self.last_single_run())
        else:
            if self.left_s() < STARTUP_S + 15:
                self.report["skipped"].append({"group": "warm", "why": "budget"})
                return
            entry.update(cold=cold, cold_wall_s=None, cold_note="the cold run was the group's point above")
        rc, wall = self.cli(overrides, None)
        entry.update(warm_wall_s=round(wall, 1), warm_rc=rc, warm=self.last_single_run())
        self.report["warm_rerun"] = entry
        self.write()

    def last_single_run(self) -> dict | None:
        from pipeline import results

        runs_dir = ROOT / "outputs/runs"
        if not runs_dir.is_dir():
            return None
        latest = max(runs_dir.iterdir(), key=lambda p: p.stat().st_mtime)
        rows = rows_of(results.load(latest), "warm")
        return rows[0] if rows else None

    def autotune(self, groups: list[Group]) -> None:
        for g in groups:
            ok = [r for r in self.report["results"] if r["group"] == g.name and r["status"] == "ok"
                  and r["gpu_compute_median_ms"] is not None]
            if not ok:
                continue
            best = min(ok, key=lambda r: r["gpu_compute_median_ms"])
            self.group(Group(f"{g.name}-max-autotune", g.model, [best["point"]], g.baseline, "max-autotune",
                             g.extra, g.batch_size))

    def collect(self) -> None:
        import logging

        from pipeline import results

        logging.getLogger("pipeline.results").setLevel(logging.ERROR)  # a job still running has no tables yet
        rows = []
        if self.sweeps.is_dir():
            for sweep in sorted(p for p in self.sweeps.iterdir() if p.is_dir()):
                try:
                    rows += rows_of(results.load(sweep), sweep.name)
                except Exception as err:  # noqa: BLE001 - a sweep being written: the next collection reads it
                    print(f"(not yet readable: {sweep.name}: {err})", flush=True)
        self.report["results"] = speedups(rows)
        self.write()

    def write(self) -> None:
        self.report["elapsed_s"] = round(time.monotonic() - self.started, 1)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.out.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.report, indent=2, default=str) + "\n")
        tmp.replace(self.out)
        self.out.with_suffix(".md").write_text(markdown(self.report))


def with_set(overrides: list[str], extra: list[str]) -> list[str]:
    """`overrides` with each of `extra` (KEY=VALUE) replacing the override of the same key, or added."""
    keys = {e.split("=", 1)[0] for e in extra}
    return [o for o in overrides if o.split("=", 1)[0] not in keys] + list(extra)


def _f(value):
    """A table value as plain JSON: None for NaN / missing, Python numbers."""
    if value is None:
        return None
    try:
        if value != value:  # NaN
            return None
    except TypeError:
        return None
    if hasattr(value, "item"):
        value = value.item()
    return value


def rows_of(r, group: str) -> list[dict]:
    s = r.summary.set_index(["run_id", "metric", "stat"])["value"] if len(r.summary) else None
    acc = r.accuracy
    out = []
    for run in r.runs.itertuples():
        def get(metric, stat, run=run):
            return _f(s.get((run.run_id, metric, stat))) if s is not None else None

        cos = acc[(acc.run_id == run.run_id) & (acc.metric == "cosine")] if len(acc) else acc
        out.append({
            "group": group, "model": run.model, "batch_size": _f(run.batch_size),
            "point": getattr(run, "point", None) if isinstance(getattr(run, "point", None), str)
            else (_f(getattr(run, "quantization", None)) if run.precision in ("int8", "fp8") else run.precision),
            "precision": run.precision, "compile": _f(getattr(run, "compile", None)),
            "channels_last": _f(getattr(run, "channels_last", None)), "status": run.status, "error": _f(run.error),
            "quantization": _f(getattr(run, "compile_quantization", None)),
            "quantized_layers": _f(getattr(run, "compile_quantized_layers", None)),
            "gpu_compute_median_ms": get("gpu_compute", "median"), "gpu_compute_cov_pct": get("gpu_compute", "cov"),
            "samples_per_s": get("throughput", "samples_per_s"),
            "cosine_vs_fp32": _f(cos.value.iloc[0]) if len(cos) else None,
            "sm_clock_median_mhz": _f(getattr(run, "benchmark_sm_clock_median_mhz", None)),
            "power_cap_w": get("power", "cap"),
            "throttle_reasons": _f(getattr(run, "benchmark_timed_throttle_reasons", None)),
            "energy_per_inference_mj": get("energy", "per_inference"),
            "energy_per_sample_mj": get("energy", "per_sample"),
            "energy_method": _f(getattr(run, "benchmark_energy_method", None)),
            "peak_memory_timed_mib": get("gpu_memory", "peak_timed"),
            "weights_mib": get("gpu_memory", "weights"),
            "compile_first_call_s": _f(getattr(run, "compile_first_call_s", None)),
            "inductor_cache": _f(getattr(run, "compile_inductor_cache", None)),
            "verdict": _f(getattr(run, "benchmark_verdict", None)), "run_id": run.run_id,
            "env_gpu": _f(getattr(run, "env_gpu", None)), "env_torch": _f(getattr(run, "env_torch", None)),
        })
    return out


BASELINES = {"vit_l16": "bf16", "vit_b16": "bf16", "resnet50": "fp16"}


def speedups(rows: list[dict]) -> list[dict]:
    """Each row's speedup over its model's baseline point at the same batch and compile mode (else at default)."""
    for row in rows:
        base_point = BASELINES.get(row["model"], "bf16")
        candidates = [r for r in rows if r["model"] == row["model"] and r["batch_size"] == row["batch_size"]
                      and r["point"] == base_point and r["status"] == "ok" and r["gpu_compute_median_ms"]]
        same = [r for r in candidates if r["compile"] == row["compile"]] or \
            [r for r in candidates if r["compile"] == "default"]
        base = same[0] if same else None
        row["baseline"] = f"{base_point} ({base['compile']})" if base else None
        ok = base and row["gpu_compute_median_ms"]
        row["speedup_vs_baseline"] = base["gpu_compute_median_ms"] / row["gpu_compute_median_ms"] if ok else None
    return rows


def markdown(report: dict) -> str:
    def f(v, spec):
        return "-" if v is None else format(v, spec)

    rows = report["results"]
    env = next((r for r in rows if r.get("env_gpu")), {})
    lines = [f"GPU {env.get('env_gpu')}, torch {env.get('env_torch')}; `{report['command']}` "
             f"({report.get('elapsed_s')} s of a {report['budget_s']} s budget)", "",
             "| model | batch | point | compile | status | median GPU compute ms | speedup vs baseline "
             "| cosine vs fp32 | median SM MHz | power cap W | throttled while timing | energy / inference mJ "
             "| peak GPU MiB | first call s | compile cache |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        status = r["status"] if r["status"] == "ok" else f"{r['status']}: {(r['error'] or '')[:120]}"
        lines.append(f"| {r['model']} | {r['batch_size']} | {r['point']}{' CL' if r.get('channels_last') else ''} | "
                     f"{r['compile']} | {status} | {f(r['gpu_compute_median_ms'], '.3f')} | "
                     f"{f(r['speedup_vs_baseline'], '.2f')}x vs {r['baseline'] or '-'} | "
                     f"{f(r['cosine_vs_fp32'], '.5f')} | {f(r['sm_clock_median_mhz'], '.0f')} | "
                     f"{f(r['power_cap_w'], '.0f')} | {r['throttle_reasons'] or 'none'} | "
                     f"{f(r['energy_per_inference_mj'], '.1f')} | {f(r['peak_memory_timed_mib'], ',.0f')} | "
                     f"{f(r['compile_first_call_s'], '.1f')} | {r['inductor_cache'] or '-'} |")
    warm = report.get("warm_rerun")
    if warm:
        cold, hot = warm.get("cold") or {}, warm.get("warm") or {}
        lines += ["", f"Warm re-run of {warm['model']} {warm['point']} (batch {warm['batch_size']}, compile default): "
                      f"second CLI run {warm.get('warm_wall_s')} s end to end, its first call "
                      f"{f(hot.get('compile_first_call_s'), '.1f')} s (compile cache: {hot.get('inductor_cache')}); "
                      f"the cold run's first call {f(cold.get('compile_first_call_s'), '.1f')} s (compile cache: "
                      f"{cold.get('inductor_cache')})"
                      + (f", {warm['cold_wall_s']} s end to end" if warm.get("cold_wall_s") else "") + "."]
    for s in report.get("skipped", []):
        lines.append(f"\nSkipped {s['group']}: {s['why']}")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the short list (about 8 minutes on an H200)")
    parser.add_argument("--only", help="groups (vit_l16, vit_b16, warm, resnet50, autotune), each optionally "
                                       "with its points: vit_b16:bf16+fp8_static,warm")
    parser.add_argument("--budget-s", type=float, default=None, help="default: 540 with --quick, else 3600")
    parser.add_argument("--duration", type=float, default=2.0, help="benchmark.duration_s per point")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="an override for every CLI run, replacing the script's own (a dry run on CPU: "
                             "--set backend.device=cpu --set model=tiny_cnn --set batch_size=2)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs/benchmarks/torch_lowp.json")
    args = parser.parse_args()
    if args.budget_s is None:
        args.budget_s = 540.0 if args.quick else 3600.0
    only = parse_only(args.only)
    runner = Runner(args)
    signal.signal(signal.SIGTERM, lambda *_: runner.stop())  # run.sh's timeout: keep what was measured
    groups = plan(args.quick, only)
    try:
        for g in groups:
            if g.name == "warm":
                runner.warm(g)
            else:
                runner.group(g)
        if not only or "autotune" in only:  # with --quick only where the budget still allows it
            runner.autotune([g for g in plan(args.quick, {}) if g.name != "warm"])
    except KeyboardInterrupt:
        runner.stop()
    finally:
        runner.collect()
    print(markdown(runner.report))
    ok = [r for r in runner.report["results"] if r["status"] == "ok"]
    failed = [r for r in runner.report["results"] if r["status"] == "failed"
              and not (r["error"] or "").startswith(("not run", "interrupted"))]  # a budget stop is not a failure
    return 0 if ok and not failed else 1


if __name__ == "__main__":
    sys.exit(main())

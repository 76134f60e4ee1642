"""Every GPU claim of the README and docs/benchmarks, re-measured, with the raw tables behind each figure.

    python benchmarks/h200_claims.py --only vit_b16 [--rounds 3] [--out docs/benchmarks/h200]   # one device call each
    python benchmarks/h200_claims.py --evaluate [--out docs/benchmarks/h200]   # the verdicts, from the tables there
    python benchmarks/h200_claims.py --dry-run --out /tmp/claims               # the plumbing on CPU (not a claim)

A group is ONE Hydra multirun of the CLI (one process), its points interleaved round by round (A B C A B C ...,
`--rounds` of each, 3 by default) through `backend.point`, so that a comparison is never two processes run at
different times and drift (clocks, the power cap) falls on every point alike. Each round is one job; a point's
figure is the median of its rounds' medians, with the range of the rounds beside it, and a speedup is the median of
the per-round ratios (each ratio pairs the two points of the same round).

Per group the script leaves, under --out/<group>/: the raw tables of every job (`runs`, `summary`, `gpu`, `accuracy`
Parquet, the jobs concatenated, zstd), and `claims.json` / `claims.md` at --out are rebuilt from every group folder
there. `warm` times a cached fp8 ViT-B point end to end (a second CLI process); `fidelity` and `tests` are read
from tests/gpu/run.sh's gpu_fidelity*.json and gpu_tests.log when they sit in --out.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.torch_lowp import with_set  # noqa: E402 - replaces an override of the same key

TABLES = ("runs", "summary", "gpu", "accuracy")
COSINE_BOUND = 0.99
JOULE_TOLERANCE = 0.05


@dataclass
class Group:
    name: str
    model: str
    points: list[str]          # the first one is the baseline
    extra: list[str] = field(default_factory=list)
    batch_size: int = 128
    compile: str = "default"


GROUPS = {
    "vit_l16": Group("vit_l16", "vit_l16", ["bf16", "fp8_static", "fp8_dynamic_rowwise", "int8_dynamic"]),
    "vit_b16": Group("vit_b16", "vit_b16", ["bf16", "fp8_static", "fp8_dynamic_rowwise", "int8_dynamic"]),
    "resnet50": Group("resnet50", "resnet50", ["fp16", "int8_dynamic", "fp8_dynamic_rowwise"],
                      ["backend.channels_last=true"]),
    "autotune": Group("autotune", "vit_b16", ["bf16", "fp8_static"], compile="max-autotune"),
}
WARM = ("vit_b16", "fp8_static")  # a dry run warms bf16: on a CPU the recipes are `unsupported`
SWEEPS = ROOT / "outputs/h200_claims"  # the sweeps themselves (many files): only their tables go to --out
# On a CPU only the plumbing can be checked: a tiny model, eager, the recipes' points give `unsupported` rows.
DRY = ["backend.device=cpu", "model=tiny_cnn", "batch_size=2", "backend.compile=eager"]


def interleaved(points: list[str], rounds: int) -> list[str]:
    """A B C A B C ...: the order Hydra's sweeper runs a swept value list in."""
    return [p for _ in range(rounds) for p in points]


def settings(args) -> list[str]:
    return [f"benchmark.duration_s={args.duration}", "benchmark.warmup_ms=500", "validate.batches=2",
            "profile.enabled=false", "report.enabled=false"]


def cli(overrides: list[str], sweep_dir: Path | None, args) -> tuple[int, float]:
    overrides = with_set(overrides, DRY) if args.dry_run else overrides
    command = [sys.executable, "-m", "pipeline", *with_set(overrides, args.set)]
    if sweep_dir is not None:
        command.append(f"hydra.sweep.dir={sweep_dir}")
    print("$ " + " ".join(command[1:]), flush=True)
    started = time.monotonic()
    rc = subprocess.call(command, cwd=ROOT)
    return rc, time.monotonic() - started


def run_group(g: Group, args) -> None:
    where, sweep = args.out / g.name, args.sweeps / g.name
    overrides = ["-m", "backend=torch", f"model={g.model}", f"batch_size={g.batch_size}",
                 f"backend.compile={g.compile}", "+sweep=gpu_precision",
                 "backend.point=" + ",".join(interleaved(g.points, args.rounds)), *g.extra, *settings(args)]
    rc, wall = cli(overrides, sweep, args)
    keep_tables(sweep, where, {"group": g.name, "rc": rc, "wall_s": round(wall, 1), "points": g.points,
                                         "rounds": args.rounds, "compile": g.compile, "dry_run": args.dry_run})


def run_warm(args) -> None:
    """The same fp8 ViT-B point twice, each its own CLI process: the second is the cached one, timed end to end."""
    model, point = WARM
    where, sweep = args.out / "warm", args.sweeps / "warm"
    overrides = ["-m", "backend=torch", f"model={model}", "batch_size=128", "+sweep=gpu_precision",
                 f"backend.point={'bf16' if args.dry_run else point}", "backend.compile=default", *settings(args)]
    walls = []
    for n in ("cold", "warm"):
        rc, wall = cli(overrides, sweep / n, args)
        walls.append({"run": n, "rc": rc, "wall_s": round(wall, 1)})
    keep_tables(sweep / "warm", where, {"group": "warm", "runs": walls, "dry_run": args.dry_run})


def keep_tables(sweep: Path, where: Path, meta: dict) -> None:
    """The sweep's tables, every job's rows in one zstd Parquet file per table (what comes back from the device)."""
    import pandas as pd

    from pipeline import results

    where.mkdir(parents=True, exist_ok=True)
    r = results.load(sweep, tables=TABLES)
    for name in TABLES:
        frame = getattr(r, name)
        if isinstance(frame, pd.DataFrame) and len(frame):
            tmp = where / f".{name}.parquet.tmp"
            frame.assign(group=meta["group"]).to_parquet(tmp, compression="zstd", index=False)
            tmp.replace(where / f"{name}.parquet")
    (where / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")


# --------------------------------------------------------------------------- the verdicts, from the tables


def _median(values):
    import statistics

    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def point_rows(where: Path) -> list[dict]:
    """One row per job (a round of a point): its median GPU time (or host latency on CPU), cosine, clocks, costs."""
    import pandas as pd

    runs = pd.read_parquet(where / "runs.parquet")
    summary = pd.read_parquet(where / "summary.parquet") if (where / "summary.parquet").exists() else None
    accuracy = pd.read_parquet(where / "accuracy.parquet") if (where / "accuracy.parquet").exists() else None
    s = summary.set_index(["run_id", "metric", "stat"])["value"] if summary is not None and len(summary) else {}

    def get(run_id, metric, stat):
        value = s.get((run_id, metric, stat)) if len(s) else None
        return None if value is None or value != value else float(value)

    out = []
    for run in runs.sort_values("job").itertuples():
        timed = "gpu_compute" if get(run.run_id, "gpu_compute", "median") is not None else "latency"
        cos = accuracy[(accuracy.run_id == run.run_id) & (accuracy.metric == "cosine")] if accuracy is not None \
            else None
        out.append({
            "job": int(run.job), "point": getattr(run, "point", None), "status": run.status, "error": run.error,
            "timed": timed, "median_ms": get(run.run_id, timed, "median"), "mean_ms": get(run.run_id, timed, "mean"),
            "cosine": float(cos.value.iloc[0]) if cos is not None and len(cos) else None,
            "sm_clock_median_mhz": getattr(run, "benchmark_sm_clock_median_mhz", None),
            "throttle": getattr(run, "benchmark_timed_throttle_reasons", None),
            "power_cap_w": get(run.run_id, "power", "cap"), "power_mean_w": get(run.run_id, "power", "mean_timed"),
            "energy_per_inference_mj": get(run.run_id, "energy", "per_inference"),
            "peak_memory_mib": get(run.run_id, "gpu_memory", "peak_timed"),
            "jws_ratio": getattr(run, "benchmark_energy_jws_ratio", None),  # the benchmark's own J / (W x s)
        })
    return out


def summarise_group(where: Path) -> dict:
    """Per point: median of round medians, their range, the paired speedup over the baseline, cosine, costs."""
    meta = json.loads((where / "meta.json").read_text())
    rows = point_rows(where)
    points = meta.get("points") or sorted({r["point"] for r in rows})
    base = points[0]
    by_point = {p: [r for r in rows if r["point"] == p] for p in points}
    rounds = {}  # round number -> {point: row}: the n-th job of each point is round n
    for p, rs in by_point.items():
        for i, r in enumerate(rs):
            rounds.setdefault(i, {})[p] = r
    out = {"group": meta["group"], "baseline": base, "meta": meta, "points": []}
    for p, rs in by_point.items():
        ok = [r for r in rs if r["status"] == "ok" and r["median_ms"]]
        ratios = [rd[base]["median_ms"] / rd[p]["median_ms"] for rd in rounds.values()
                  if p in rd and base in rd and rd[p]["median_ms"] and rd[base]["median_ms"]]
        medians = [r["median_ms"] for r in ok]
        joules = [joule_check(r) for r in ok]
        out["points"].append({
            "point": p, "rounds_ok": len(ok), "rounds": len(rs),
            "status": "ok" if ok else (rs[0]["status"] + ": " + str(rs[0]["error"])[:200] if rs else "not run"),
            "timed": ok[0]["timed"] if ok else None,
            "median_of_medians_ms": _median(medians), "min_ms": min(medians, default=None),
            "max_ms": max(medians, default=None),
            "speedup_vs_baseline": _median(ratios) if p != base else 1.0,
            "speedup_range": [min(ratios), max(ratios)] if ratios and p != base else None,
            "cosine_min": min((r["cosine"] for r in ok if r["cosine"] is not None), default=None),
            "sm_clock_mhz": [r["sm_clock_median_mhz"] for r in ok],
            "throttle": sorted({str(r["throttle"]) for r in ok if r["throttle"]}),
            "power_cap_w": _median([r["power_cap_w"] for r in ok]),
            "energy_per_inference_mj": _median([r["energy_per_inference_mj"] for r in ok]),
            "joule_check_worst": max((j for j in joules if j is not None), default=None),
            "peak_memory_mib": _median([r["peak_memory_mib"] for r in ok]),
        })
    return out


def joule_check(row: dict) -> float | None:
    """|E - P x t| / E per inference: energy per inference against mean power times mean GPU time (J = W x s); the
    benchmark's own ratio where it recorded one (it divides by the streams in flight)."""
    ratio = row.get("jws_ratio")
    if ratio is not None and ratio == ratio:
        return abs(1 - 1 / ratio)
    e, w, t = row["energy_per_inference_mj"], row["power_mean_w"], row["mean_ms"]
    if not (e and w and t):
        return None
    return abs(e - w * t) / e


def verdicts(groups: dict[str, dict], out: Path) -> list[dict]:
    """Each figure the H200 issue asks for: met, not met, or not measured, and the table it rests on."""
    def best(g, exclude_base=True):
        pts = [p for p in g["points"] if p["median_of_medians_ms"] and (p["point"] != g["baseline"]
                                                                         or not exclude_base)
               and (p["cosine_min"] or 0) >= COSINE_BOUND]
        return min(pts, key=lambda p: p["median_of_medians_ms"]) if pts else None

    claims = []

    def claim(name, goal, value, met, source):
        claims.append({"claim": name, "goal": goal, "value": value,
                       "verdict": "not measured" if met is None else ("met" if met else "not met"), "source": source})

    if (g := groups.get("vit_l16")) is not None:
        b = best(g)
        claim("ViT-L/16 b128 best fp8/int8 over bf16", ">= 1.5x at cosine >= 0.99",
              b and f"{b['point']} {b['speedup_vs_baseline']:.2f}x (rounds {b['speedup_range']})",
              None if b is None else b["speedup_vs_baseline"] >= 1.5, "vit_l16/")
    if (g := groups.get("vit_b16")) is not None:
        b = best(g, exclude_base=False)
        claim("ViT-B/16 b128 best point", "<= 9.0 ms median GPU time at cosine >= 0.99",
              b and f"{b['point']} {b['median_of_medians_ms']:.3f} ms", None if b is None
              else b["median_of_medians_ms"] <= 9.0, "vit_b16/")
    if (g := groups.get("resnet50")) is not None:
        base = next(p for p in g["points"] if p["point"] == g["baseline"])
        claim("ResNet-50 b128 fp16 channels_last", "<= 4.8 ms", base["median_of_medians_ms"],
              None if base["median_of_medians_ms"] is None else base["median_of_medians_ms"] <= 4.8, "resnet50/")
        compiled = [p["point"] for p in g["points"] if p["point"] != g["baseline"] and p["rounds_ok"]]
        claim("ResNet-50 int8 and fp8 measured compiled", "both ok", compiled, len(compiled) == 2, "resnet50/")
    if (g := groups.get("warm")) is not None:
        warm = next((r for r in g["meta"]["runs"] if r["run"] == "warm"), None)
        claim("warm re-run of a cached fp8 ViT-B point", "< 10 s end to end", warm and warm["wall_s"],
              None if not warm or warm["rc"] else warm["wall_s"] < 10, "warm/")
    joules = [p["joule_check_worst"] for g in groups.values() for p in g["points"]
              if p["joule_check_worst"] is not None]
    claim("energy: J = W x s", f"within {JOULE_TOLERANCE:.0%}", max(joules, default=None),
          None if not joules else max(joules) <= JOULE_TOLERANCE, "*/summary.parquet")
    for name in ("gpu_fidelity.json", "gpu_fidelity_lowp.json"):
        if (out / name).exists():
            f = json.loads((out / name).read_text())
            passed = [r.get("agree") for r in f.get("results", [])]
            claim(f"fidelity ({name})", f"within {f.get('tolerance_pct')} % of an independent replay",
                  f"{sum(bool(p) for p in passed)}/{len(passed)}", bool(passed) and all(passed), name)
    if (out / "gpu_tests.log").exists():
        last = (out / "gpu_tests.log").read_text().strip().splitlines()[-1:]
        claim("gpu-marked tests", "all pass", last[0] if last else None,
              bool(last) and "failed" not in last[0] and "passed" in last[0], "gpu_tests.log")
    return claims


def evaluate(out: Path) -> dict:
    groups = {d.name: summarise_group(d) for d in sorted(out.iterdir())
              if d.is_dir() and (d / "meta.json").exists() and (d / "runs.parquet").exists()}
    report = {"groups": groups, "claims": verdicts(groups, out),
              "dry_run": any(g["meta"].get("dry_run") for g in groups.values())}
    tmp = out / ".claims.json.tmp"
    tmp.write_text(json.dumps(report, indent=2, default=str) + "\n")
    tmp.replace(out / "claims.json")
    (out / "claims.md").write_text(markdown(report))
    return report


def markdown(report: dict) -> str:
    def f(v, spec=".3f"):
        return "" if v is None else format(v, spec)

    lines = ["**Dry run on CPU: plumbing only, not a claim.**\n" if report["dry_run"] else "",
             "| claim | goal | value | verdict | tables |", "|---|---|---|---|---|"]
    lines += [f"| {c['claim']} | {c['goal']} | {c['value']} | {c['verdict']} | `{c['source']}` |"
              for c in report["claims"]]
    for g in report["groups"].values():
        lines += ["", f"### {g['group']} (baseline {g['baseline']}; {g['meta'].get('rounds', '-')} interleaved rounds)",
                  "", "| point | status | median of round medians ms (min-max) | speedup (rounds) | cosine min "
                  "| SM MHz per round | throttle | energy mJ / inference | J=W x s off by | peak MiB |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for p in g["points"]:
            lines.append(f"| {p['point']} | {p['status']} | {f(p['median_of_medians_ms'])} ({f(p['min_ms'])}-"
                         f"{f(p['max_ms'])}) | {f(p['speedup_vs_baseline'], '.2f')}x {p['speedup_range'] or ''} | "
                         f"{f(p['cosine_min'], '.4f')} | {p['sm_clock_mhz']} | {', '.join(p['throttle']) or 'none'} "
                         f"| {f(p['energy_per_inference_mj'], '.1f')} | {f(p['joule_check_worst'], '.1%')} | "
                         f"{f(p['peak_memory_mib'], ',.0f')} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="vit_b16", help=f"groups, comma-separated: {', '.join(GROUPS)}, warm")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of every point (>= 3 for a claim)")
    parser.add_argument("--duration", type=float, default=2.0, help="benchmark.duration_s of each round")
    parser.add_argument("--evaluate", action="store_true", help="only rebuild claims.json/.md from --out's tables")
    parser.add_argument("--dry-run", action="store_true", help="CPU: tiny_cnn, eager, short; checks the plumbing")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="an override for every CLI run, replacing the script's own (e.g. cache.dir=...)")
    parser.add_argument("--sweeps", type=Path, default=SWEEPS, help="where the sweeps run (only tables go to --out)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs/benchmarks/h200")
    args = parser.parse_args()
    if args.dry_run:
        args.duration = min(args.duration, 0.3)
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.evaluate:
        for name in filter(None, args.only.split(",")):
            if name == "warm":
                run_warm(args)
            elif name in GROUPS:
                run_group(GROUPS[name], args)
            else:
                parser.error(f"--only: unknown group {name!r}; valid: {', '.join(GROUPS)}, warm")
    report = evaluate(args.out)
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())

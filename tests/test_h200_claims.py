"""benchmarks/h200_claims.py: the GPU claims script's plumbing, on CPU (its figures come from the H200 issue).

The dry run goes through the CLI as on the GPU (tiny_cnn, eager, the recipes `unsupported` here); the verdict
arithmetic is checked on tables whose answer is known by construction.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import h200_claims  # noqa: E402


def write_group(where: Path, points, medians_by_round, energy=None) -> None:
    """A group's tables as keep_tables writes them: one ok job per (round, point), in interleaved order."""
    where.mkdir(parents=True)
    runs, summary, acc = [], [], []
    job = 0
    for rnd in medians_by_round:
        for point, median in zip(points, rnd):
            rid = f"r{job}"
            runs.append({"run_id": rid, "job": job, "point": point, "status": "ok", "error": None})
            summary += [{"run_id": rid, "metric": "gpu_compute", "stat": "median", "value": median, "unit": "ms"},
                        {"run_id": rid, "metric": "gpu_compute", "stat": "mean", "value": median, "unit": "ms"}]
            if energy:
                watts, mj = energy
                summary += [{"run_id": rid, "metric": "power", "stat": "mean_timed", "value": watts, "unit": "W"},
                            {"run_id": rid, "metric": "energy", "stat": "per_inference", "value": mj, "unit": "mJ"}]
            acc.append({"run_id": rid, "output": "y", "metric": "cosine", "value": 0.999, "reference": "fp32",
                        "samples": 8})
            job += 1
    pd.DataFrame(runs).to_parquet(where / "runs.parquet")
    pd.DataFrame(summary).to_parquet(where / "summary.parquet")
    pd.DataFrame(acc).to_parquet(where / "accuracy.parquet")
    (where / "meta.json").write_text(json.dumps({"group": where.name, "points": list(points), "rounds": 3}))


def test_speedup_is_the_median_of_paired_round_ratios(tmp_path):
    # the baseline drifts 10 -> 12 -> 11 ms; the recipe is exactly 2x faster in every round: paired, 2.00x, while
    # a ratio of unpaired medians would also say 2.0 here but the range of the rounds shows no spread at all
    write_group(tmp_path / "vit_l16", ["bf16", "fp8_static"], [[10.0, 5.0], [12.0, 6.0], [11.0, 5.5]])
    g = h200_claims.summarise_group(tmp_path / "vit_l16")
    fp8 = next(p for p in g["points"] if p["point"] == "fp8_static")
    assert fp8["speedup_vs_baseline"] == pytest.approx(2.0)
    assert fp8["speedup_range"] == pytest.approx([2.0, 2.0])
    assert fp8["median_of_medians_ms"] == pytest.approx(5.5)
    claims = {c["claim"]: c for c in h200_claims.verdicts({"vit_l16": g}, tmp_path)}
    assert claims["ViT-L/16 b128 best fp8/int8 over bf16"]["verdict"] == "met"


def test_a_speedup_below_the_goal_is_not_met_and_energy_is_checked(tmp_path):
    # 1.25x: under the 1.5x goal. Energy: every row says 700 W and 4000 mJ per inference; J = W x s gives 5600 mJ
    # for the 8 ms recipe (40 % off) and 7000 mJ for the 10 ms baseline (75 % off): the worst row is reported
    write_group(tmp_path / "vit_l16", ["bf16", "fp8_static"], [[10.0, 8.0]] * 3, energy=(700.0, 4000.0))
    g = h200_claims.summarise_group(tmp_path / "vit_l16")
    claims = {c["claim"]: c for c in h200_claims.verdicts({"vit_l16": g}, tmp_path)}
    assert claims["ViT-L/16 b128 best fp8/int8 over bf16"]["verdict"] == "not met"
    energy = claims["energy: J = W x s"]
    assert energy["verdict"] == "not met" and energy["value"] == pytest.approx(0.75)


@pytest.mark.slow
def test_dry_run_interleaves_the_points_in_one_process_and_keeps_the_tables(tmp_path):
    out = tmp_path / "h200"
    subprocess.run([sys.executable, str(ROOT / "benchmarks/h200_claims.py"), "--dry-run", "--only", "resnet50",
                    "--rounds", "2", "--out", str(out), "--sweeps", str(tmp_path / "sweeps"),
                    "--set", f"cache.dir={tmp_path / 'cache'}"], check=True, cwd=tmp_path)
    runs = pd.read_parquet(out / "resnet50/runs.parquet").sort_values("job")
    points = h200_claims.GROUPS["resnet50"].points
    assert list(runs.point) == points * 2  # A B C A B C: interleaved, one multirun
    assert runs.run_id.nunique() == len(runs)
    report = json.loads((out / "claims.json").read_text())
    assert report["dry_run"] is True
    base = next(p for p in report["groups"]["resnet50"]["points"] if p["point"] == "fp16")
    summary = pd.read_parquet(out / "resnet50/summary.parquet")
    medians = summary[(summary.metric == "latency") & (summary.stat == "median")
                      & summary.run_id.isin(runs[runs.point == "fp16"].run_id)].value
    assert base["rounds_ok"] == 2 and base["median_of_medians_ms"] == pytest.approx(medians.median())
    assert "Dry run on CPU" in (out / "claims.md").read_text()

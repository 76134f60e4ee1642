"""reproduce says whether the rerun ran under comparable conditions (pipeline/analysis/comparable.py)."""
from __future__ import annotations

from pipeline import results
from pipeline.run import job as jobmod
from pipeline.run import reproduce

ROW = {"run_id": "old", "status": "ok", "config_hash": "h", "env_cpu": "AMD EPYC", "env_onnxruntime": "1.24.4",
       "benchmark_cpu_load": 0.3, "benchmark_cpu_count": 2}


def _report(tmp_path, new_row: dict) -> dict:
    summary = [{"run_id": "old", "metric": "latency", "stat": "median", "value": 1.0, "unit": "ms"}]
    results.write_tables(tmp_path / "old", {"runs": [ROW], "summary": summary})
    results.write_tables(tmp_path / "new", {"runs": [{**new_row, "run_id": "new"}],
                                            "summary": [{**summary[0], "run_id": "new", "value": 1.4}]})
    outcome = jobmod.JobOutcome("new", "ok", None, {**new_row, "run_id": "new"}, {})
    return reproduce.compare(ROW, results.load(tmp_path / "old"), outcome, tmp_path / "new")


def test_a_rerun_on_a_busier_host_is_not_comparable(tmp_path):
    report = _report(tmp_path, {**ROW, "benchmark_cpu_load": 3.5})
    assert report["not_comparable"] == ["CPU load 0.3 vs 3.5 on 2 / 2 cores"]
    lines = reproduce.render(report).splitlines()
    assert "  conditions: not comparable: CPU load 0.3 vs 3.5 on 2 / 2 cores" in lines
    assert report["metrics"]["median latency ms"]["ratio"] == 1.4  # the ratio is still shown


def test_a_rerun_under_the_same_conditions_is_comparable(tmp_path):
    report = _report(tmp_path, dict(ROW))
    assert report["not_comparable"] == []
    assert "  conditions: comparable" in reproduce.render(report).splitlines()

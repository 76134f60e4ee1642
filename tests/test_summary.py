"""The end-of-sweep table (pipeline/analysis/summary.py): every swept key, the model when models differ, the verdict and
the CoV; and benchmark.trials on the CPU path (stages/cpu_timing.py), through the real CLI."""
from __future__ import annotations

import pytest

from pipeline import results
from pipeline.analysis import paired, summary
from stages import cpu_timing
from tests.conftest import FAST, run_cli
from tests.test_select import paired_rows, regression_rows, write_job


def table_lines(text: str) -> list[list[str]]:
    return [line.split() for line in text.splitlines()[1:]]


def test_every_swept_key_verdict_and_cov(tmp_path):
    for job, (level, streams) in enumerate([(1, 0), (3, 0), (1, 2), (3, 2)]):
        write_job(tmp_path, job, "fp16", 1.0 + job, cov=0.5 + job,
                  overrides=f"backend.optimization_level={level} backend.max_aux_streams={streams} "
                            f"benchmark.duration_s=0.2",
                  optimization_level=level, max_aux_streams=streams,
                  benchmark_verdict="stable" if job < 3 else "unstable")
    text = summary.sweep_summary(results.load(tmp_path), tmp_path)
    header, *rows = table_lines(text)
    # swept keys by their short names; a constant override (benchmark.duration_s) is not one
    assert header[:4] == ["job", "optimization_level", "max_aux_streams", "status"]
    assert "duration_s" not in header and "precision" not in header
    assert header[4:8] == ["median_ms", "p99_ms", "cov%", "verdict"]
    assert rows[3][:8] == ["3", "3", "2", "ok", "4.0000", "-", "3.50", "unstable"]


def test_each_column_has_one_readable_number_format(tmp_path):
    """Not 2.131e+04 above 9401 in one column: throughput with thousands separators, latency to 4 decimals."""
    for job, median in enumerate([0.04693, 0.1064]):
        write_job(tmp_path, job, ("fp32", "int8")[job], median, error=(1e-7, 0.0112)[job])
    _, *rows = table_lines(summary.sweep_summary(results.load(tmp_path), tmp_path))
    # (no verdict recorded: that column is blank; no p99 or sample count: '-')
    assert rows[0][3:] == ["0.0469", "-", "1.00", "21,308", "1.00e-07", "-"]
    assert rows[1][3:] == ["0.1064", "-", "1.00", "9,398", "1.12e-02", "-"]


def test_the_top1_drop_shows_its_interval_and_its_samples(tmp_path):
    write_job(tmp_path, 0, "fp32", 1.0, accuracy=paired_rows(359, 0, 0))
    write_job(tmp_path, 1, "int8", 0.5, accuracy=paired_rows(359, 1, 4))
    text = summary.sweep_summary(results.load(tmp_path), tmp_path)
    header, *_ = table_lines(text)
    assert header[-3:] == ["top1_drop[95%]", "samples", "error"]
    int8, drop = text.splitlines()[-1], paired.drop(359, 1, 4)  # the statistics: tests/test_paired.py
    assert f"{drop.value:.3f} [{drop.low:.3f}, {drop.high:.3f}]" in int8 and int8.rstrip().endswith("359"), text
    assert drop.low < 0 < drop.high


def test_a_task_metric_and_its_drop_are_columns(tmp_path):
    write_job(tmp_path, 0, "fp32", 1.0, accuracy=regression_rows(0.45, 43.0))
    write_job(tmp_path, 1, "fp16", 0.6, accuracy=regression_rows(0.449, 43.5))
    text = summary.sweep_summary(results.load(tmp_path), tmp_path)
    header, *rows = table_lines(text)
    assert header[-4:] == ["r2", "r2_drop", "samples", "error"]
    assert rows[1][-3:] == ["0.449", "0.001", "89"]


def test_the_model_column_appears_when_models_differ(tmp_path):
    write_job(tmp_path, 0, "fp32", 1.0, model="tiny_cnn", overrides="precision=fp32")
    write_job(tmp_path, 1, "fp32", 2.0, model="resnet18", overrides="precision=fp32")
    header, *rows = table_lines(summary.sweep_summary(results.load(tmp_path), tmp_path))
    assert header[:3] == ["job", "model", "status"]
    assert [r[1] for r in rows] == ["tiny_cnn", "resnet18"]
    same = tmp_path / "same"
    write_job(same, 0, "fp32", 1.0, overrides="precision=fp32")
    write_job(same, 1, "int8", 2.0, overrides="precision=int8")
    assert table_lines(summary.sweep_summary(results.load(same), same))[0][:3] == ["job", "precision", "status"]


def test_cpu_timing_runs_every_trial():
    calls = []
    m = cpu_timing.measure(lambda: calls.append(1), warmup_ms=0, duration_s=0, min_iterations=7, trials=3)
    assert [len(t) for t in m.trials] == [7, 7, 7] and len(m.bench_times_s) == 3
    assert len(calls) == 1 + 21  # one warm-up call, then three timed loops
    tables, info = cpu_timing.tables(m, batch_size=1)
    stats = {(r["metric"], r["stat"]) for r in tables["summary"]}
    assert {("latency", "trial_spread"), ("latency", "median_trial2")} <= stats
    assert info["trials"] == 3 and info["iterations"] == 21
    assert sorted(set(tables["samples"]["trial"])) == [0, 1, 2]
    assert cpu_timing.measure(lambda: None, warmup_ms=0, duration_s=0, min_iterations=2).trials[0]  # default: one


@pytest.mark.slow  # the real CLI
def test_sweep_table_and_cpu_trials(tmp_path):
    proc = run_cli(["-m", "batch_size=1,2", "backend.optimization_level=1,3", "benchmark.trials=2",
                    "backend=onnxruntime", "report.enabled=false", *FAST], tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("sweep "))
    header = lines[head + 1].split()
    assert header[:4] == ["job", "batch_size", "optimization_level", "status"], lines[head + 1]
    assert {"median_ms", "cov%", "verdict", "samples/s"} <= set(header)
    assert len(lines[head + 2:head + 6]) == 4 and all(" ok " in line for line in lines[head + 2:head + 6])
    # batch_size is a workload: one answer per batch size, then the throughput view
    assert lines[head + 6].startswith("best at batch_size=1: ") and lines[head + 7].startswith("best at batch_size=2: ")
    assert lines[head + 8].startswith("most throughput: batch_size=")
    r = results.load(next((tmp_path / "outputs/sweeps/multirun").iterdir()))
    assert (r.runs["benchmark_trials"] == 2).all()
    spread = r.summary.query("metric == 'latency' and stat == 'trial_spread'")
    assert len(spread) == 4 and (spread["value"] >= 0).all()
    assert sorted(r.samples["trial"].unique()) == [0, 1]

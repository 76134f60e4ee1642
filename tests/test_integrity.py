"""What load(), select, report, the sweep's summary and resume guarantee about a sweep's results: the grid of the
sweep is the truth (a point without a row is missing, not silently absent); a table changed or deleted after its
job published it is noticed; and keys that never change a result (resume=true) are no swept axes."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline import results
from pipeline.analysis import report, select, summary, sweeps
from pipeline.run import job
from tests.conftest import FAST, ROOT, run_cli
from tests.test_select import write_job


def write_grid(sweep_dir: Path, *points: str) -> None:
    sweep_dir.mkdir(parents=True, exist_ok=True)
    results.write_points(sweep_dir, [p.split() for p in points])


# ---------------------------------------------------------------- item 5: the grid of the sweep is the truth

def test_points_of_the_grid_without_a_row_are_missing(tmp_path):
    write_grid(tmp_path, "precision=fp32", "precision=fp16", "precision=int8", "precision=fp9")
    write_job(tmp_path, 0, "fp32", 1.0, overrides="precision=fp32")
    # rerun by resume: resume=true (never changes a result) does not make it another point
    write_job(tmp_path, 1, "int8", 0.5, overrides="precision=int8 resume=true")
    results.write_tables(tmp_path / "invalid-0", {"runs": [{  # a point that could not be composed
        "run_id": "bad", "sweep": "precision", "status": "failed", "error": "config: fp9", "precision": "fp9",
        "overrides": "precision=fp9", "started": "2026-01-01T00:00:00+00:00"}]})
    r = results.load(tmp_path)
    assert r.missing == [(tmp_path, "precision=fp16")]
    assert r.grid == {tmp_path: 4}
    [(where, line)] = r.skipped
    assert where == tmp_path and line.startswith("1 of 4 points missing") and "[precision=fp16]" in line
    assert "resume=true" in line
    assert "missing: 1 of 4 points missing" in summary.sweep_summary(r, tmp_path)
    # a job of the sweep, and a sweep without a grid file (an older one, a search sweeper): as before
    assert results.load(tmp_path / "0").missing == []
    (tmp_path / results.POINTS_FILE).unlink()
    assert results.load(tmp_path).missing == [] and results.load(tmp_path).skipped == []


def test_select_and_report_exit_non_zero_with_points_missing(tmp_path, capsys):
    write_grid(tmp_path, "precision=fp32", "precision=int8")
    write_job(tmp_path, 0, "fp32", 1.0, overrides="precision=fp32")
    assert select.main([str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "1 of 2 points missing" in err and "[precision=int8]" in err
    assert report.main([str(tmp_path), "--out", str(tmp_path / "r")]) == 1
    assert "1 of 2 points missing" in capsys.readouterr().err
    assert "1 of 2 points missing" in (tmp_path / "r" / "index.html").read_text()
    write_job(tmp_path, 1, "int8", 0.5, overrides="precision=int8")  # the point ran (resume)
    assert select.main([str(tmp_path)]) == 0 and report.main([str(tmp_path), "--out", str(tmp_path / "r")]) == 0


def test_missing_points_are_counted_per_sweep(tmp_path):
    for name in ("a", "b"):
        write_grid(tmp_path / name, "precision=fp32", "precision=int8")
        write_job(tmp_path / name, 0, "fp32", 1.0, overrides="precision=fp32")
    write_job(tmp_path / "b", 1, "int8", 1.0, overrides="precision=int8")
    assert results.load(tmp_path).missing == [(tmp_path / "a", "precision=int8")]


@pytest.mark.slow  # the real CLI, killed with SIGKILL
def test_a_sweep_killed_early_shows_its_missing_points_and_resume_runs_them(workdir):
    sweep_dir = workdir / "sweep"
    args = ["-m", "precision=fp32,int8", f"hydra.sweep.dir={sweep_dir}", "report.enabled=false", *FAST]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "FAULT_PRECISION": "fp32"}
    killed = subprocess.run([sys.executable, str(ROOT / "tests/fault_cli.py"), "table:published", *args],
                            cwd=workdir, env=env, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    before = results.load(sweep_dir)  # job 0 published its tables, then the whole sweep was killed
    assert before.runs["precision"].tolist() == ["fp32"]
    [(where, point)] = before.missing  # the point's overrides, as the sweeper gives them to its job
    assert where == sweep_dir and point.startswith("precision=int8 ") and before.grid == {sweep_dir: 2}
    chosen = run_cli([str(sweep_dir)], workdir, module="pipeline.select")
    assert chosen.returncode == 1 and "1 of 2 points missing" in chosen.stderr, chosen.stdout + chosen.stderr
    resumed = run_cli([*args, "resume=true"], workdir)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "missing" not in resumed.stdout
    after = results.load(sweep_dir)
    assert after.missing == [] and after.skipped == []
    runs = after.runs.set_index("precision")
    assert list(runs.loc[["fp32", "int8"], "status"]) == ["ok", "ok"]
    assert runs.loc["fp32", "run_id"] == before.runs["run_id"].iloc[0]  # kept by resume
    assert "resume" not in after.runs.columns  # item 9: resume=true is no runs column


# ---------------------------------------------------------------- item 7: a table changed after publishing

def test_a_table_deleted_after_publishing_skips_its_job(tmp_path, caplog):
    write_job(tmp_path, 0, "fp32", 1.0)
    write_job(tmp_path, 1, "int8", 0.5)
    assert (tmp_path / "1" / "tables" / results.MANIFEST).is_file()
    (tmp_path / "1" / "tables" / "summary.parquet").unlink()
    r = results.load(tmp_path)
    assert r.runs["precision"].tolist() == ["fp32"]  # none of the job's tables: all of them or none
    assert set(r.summary["run_id"]) == {"run-0-fp32-1"} and set(r.accuracy["run_id"]) == {"run-0-fp32-1"}
    [(where, why)] = r.skipped
    assert where == tmp_path / "1" and "summary.parquet is missing" in why and "resume=true" in why
    assert "summary.parquet is missing" in caplog.text
    # runs only (what resume reads): the job is still not taken as complete
    assert results.load(tmp_path / "1", tables=("runs",)).runs.empty


def test_a_table_truncated_after_publishing_skips_its_job(tmp_path):
    write_job(tmp_path, 0, "fp32", 1.0)
    runs = tmp_path / "0" / "tables" / "runs.parquet"
    runs.write_bytes(runs.read_bytes()[:-1] + b"\0" * 9)  # another size
    r = results.load(tmp_path)
    assert r.runs.empty and "runs.parquet has" in r.skipped[0][1]


def test_tables_without_a_manifest_load_as_before(tmp_path):
    write_job(tmp_path, 0, "fp32", 1.0)
    (tmp_path / "0" / "tables" / results.MANIFEST).unlink()
    (tmp_path / "0" / "tables" / "accuracy.parquet").unlink()
    r = results.load(tmp_path)
    assert r.runs["precision"].tolist() == ["fp32"] and r.skipped == [] and r.accuracy.empty


def test_resume_reruns_a_job_whose_tables_changed(tmp_path):
    config = {"model": {"name": "tiny_cnn"}, "precision": {"name": "fp32"}, "seed": 0}
    write_job(tmp_path, 0, "fp32", 1.0, config_hash=job.config_hash(config))
    job_dir = tmp_path / "0"
    assert job.previous_ok(job_dir, config) is not None
    manifest = json.loads((job_dir / "tables" / results.MANIFEST).read_text())
    assert set(manifest["files"]) == {"runs.parquet", "summary.parquet", "accuracy.parquet"}
    assert all(len(e["sha256"]) == 64 and e["size"] > 0 for e in manifest["files"].values())
    summary_file = job_dir / "tables" / "summary.parquet"
    data = bytearray(summary_file.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size: only the digest tells
    summary_file.write_bytes(bytes(data))
    assert results.verify_tables(job_dir) is None  # load() checks sizes only
    assert "sha256 mismatch" in results.verify_tables(job_dir, digests=True)
    assert job.previous_ok(job_dir, config) is None  # resume checks the digests: rerun
    summary_file.unlink()
    assert job.previous_ok(job_dir, config) is None


# ---------------------------------------------------------------- item 9: resume is no swept axis

def test_resume_is_no_runs_column(base_config):
    meta = job.JobMeta(sweep="precision", job=1,
                       overrides=["precision=fp32", "resume=true", "cache.verify=true", "isolation.mode=all"])
    row = job._base_row(base_config, meta, __import__("datetime").datetime.now())
    assert not {"resume", "cache_verify", "isolation_mode"} & set(row)
    assert row["overrides"] == "precision=fp32 resume=true cache.verify=true isolation.mode=all"  # as typed


def test_a_rerun_point_keeps_its_name_and_its_fp32_twin(tmp_path):
    write_job(tmp_path, 0, "fp32", 1.0, error=1e-7, overrides="precision=fp32")
    write_job(tmp_path, 1, "fp16", 0.5, error=1e-3, overrides="precision=fp16 resume=true")
    write_job(tmp_path, 2, "int8", 0.7, error=1e-3, overrides="precision=int8")
    loaded = results.load(tmp_path)
    assert list(sweeps.swept_values(loaded.runs).columns) == ["precision"]
    selection = select.choose(loaded)
    assert selection.best.name == "precision=fp16"
    assert selection.baseline is not None and selection.baseline.precision == "fp32"
    assert selection.choices[0].baseline_is_fp32
    assert "resume" not in summary.sweep_summary(loaded, tmp_path).splitlines()[1]

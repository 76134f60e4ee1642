"""`python -m pipeline.compare A B`: a real CPU sweep against itself (no regression), against a copy whose
latencies were doubled or whose accuracy got worse (regressions, named), and the errors."""
from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from pipeline import results
from pipeline.analysis import compare
from tests.conftest import FAST, run_cli

pytestmark = pytest.mark.slow  # the real CLI


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    cwd = tmp_path_factory.mktemp("compare")
    proc = run_cli(["-m", "model=tiny_cnn", "precision=fp32,int8,bf16", "backend=onnxruntime", "report.enabled=false",
                    *FAST], cwd)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return next((cwd / "outputs/sweeps/multirun").iterdir())


def altered_copy(sweep: Path, dest: Path, table: str, metrics: tuple[str, ...], change) -> Path:
    """A copy of the sweep whose `table` values of `metrics` went through `change` (percentages stay)."""
    shutil.copytree(sweep, dest)
    for path in dest.glob(f"*/tables/{table}.parquet"):
        t = pq.read_table(path)
        hit = pc.is_in(t["metric"], pa.array(metrics))
        if "stat" in t.column_names:  # percentages (the spread of single iterations, the median's noise) stay
            hit = pc.and_(hit, pc.invert(pc.is_in(t["stat"], pa.array(["cov", "median_noise"]))))
        values = pc.if_else(hit, change(t["value"]), t["value"])
        pq.write_table(t.set_column(t.column_names.index("value"), "value", values), path)
        (path.parent / results.MANIFEST).unlink()  # rewritten by hand: else load() skips the job as tampered with
    return dest


def test_a_sweep_against_itself_is_no_regression(sweep):
    proc = run_cli([str(sweep), str(sweep)], sweep, module="pipeline.compare")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "3 pair(s) by config_hash" in proc.stdout and "no regression" in proc.stdout
    assert "REGRESSED" not in proc.stdout


def test_doubled_latency_is_a_regression_named(sweep, tmp_path):
    slower = altered_copy(sweep, tmp_path / "slower", "summary", ("latency",), lambda v: pc.multiply(v, 2.0))
    proc = run_cli([str(sweep), str(slower)], tmp_path, module="pipeline.compare")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    regressed = proc.stdout.splitlines()[-1]
    assert regressed.startswith("regressed: 2 of 3 pair(s): ")
    assert "precision=fp32: 100% slower, beyond the tolerance 5%" in regressed
    assert "precision=int8: 100% slower" in regressed and "bf16" not in regressed  # unsupported on both sides
    back = run_cli([str(slower), str(sweep)], tmp_path, module="pipeline.compare")  # B faster: fine
    assert back.returncode == 0, back.stdout
    assert "50% better" in back.stdout
    loose = run_cli([str(sweep), str(slower), "--tolerance", "150"], tmp_path, module="pipeline.compare")
    assert loose.returncode == 0, loose.stdout


def test_lost_accuracy_is_a_regression(sweep, tmp_path):
    worse = altered_copy(sweep, tmp_path / "worse", "accuracy", ("rel_l2_err",), lambda v: pc.add(v, 0.05))
    proc = run_cli([str(sweep), str(worse)], tmp_path, module="pipeline.compare")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "rel_l2_err 0.05 less accurate, beyond select.max_accuracy_drop=0.01" in proc.stdout


def test_unpaired_jobs_are_listed(sweep, capsys):
    code = compare.main([str(sweep), str(sweep / "0")])
    out = capsys.readouterr().out
    assert code == 0 and "1 pair(s) by config_hash" in out
    assert "only in A (unpaired, 2): precision=int8 (job 1), precision=bf16 (job 2)" in out


@pytest.mark.parametrize("which", ["missing", "empty", "unrelated"])
def test_nothing_to_compare_is_one_line(sweep, tmp_path, which):
    other = {"missing": tmp_path / "nope", "empty": tmp_path, "unrelated": tmp_path / "other"}[which]
    if which == "unrelated":  # a job whose config no job of the sweep has
        results.write_tables(other / "0", {"runs": [{"run_id": "x", "status": "ok", "config_hash": "h"}]})
    proc = run_cli([str(sweep), str(other)], tmp_path, module="pipeline.compare")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    said = {"missing": "does not exist", "empty": "no results", "unrelated": "nothing to compare"}[which]
    assert proc.stderr.startswith("error: ") and said in proc.stderr

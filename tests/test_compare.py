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
def measured(tmp_path_factory) -> Path:
    """The sweep as measured, on whatever host runs the tests (a shared CI runner may be saturated)."""
    cwd = tmp_path_factory.mktemp("compare")
    proc = run_cli(["-m", "model=tiny_cnn", "precision=fp32,int8,bf16", "backend=onnxruntime", "report.enabled=false",
                    *FAST], cwd)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return next((cwd / "outputs/sweeps/multirun").iterdir())


@pytest.fixture(scope="module")
def sweep(measured, tmp_path_factory) -> Path:
    """The same sweep as if measured on a quiet host (other processes took 5 % of the CPU), so that a copy of it
    whose figures were altered is comparable with it."""
    return _edit_runs(measured, tmp_path_factory.mktemp("quiet") / "sweep", "benchmark_cpu_others_pct",
                      lambda v: 5.0)


def _edit_runs(sweep: Path, dest: Path, column: str, change) -> Path:
    """A copy of the sweep whose runs rows' `column` went through `change` (value -> value)."""
    shutil.copytree(sweep, dest)
    for path in dest.glob("*/tables/runs.parquet"):
        t = pq.read_table(path)
        if column not in t.column_names:
            continue  # an unsupported point: nothing measured
        values = pa.array([change(v) for v in t[column].to_pylist()], type=t[column].type)
        pq.write_table(t.set_column(t.column_names.index(column), column, values), path)
        (path.parent / results.MANIFEST).unlink(missing_ok=True)
    return dest


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
        # rewritten by hand: else load() skips the job as tampered with
        (path.parent / results.MANIFEST).unlink(missing_ok=True)
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


def test_conditions_that_differ_are_said_and_fail_only_with_strict(sweep, tmp_path):
    # other processes took 18 % of the host's CPU while B measured, 5 % while A did
    busier = _edit_runs(sweep, tmp_path / "busy", "benchmark_cpu_others_pct", lambda v: 18.0)
    slower = altered_copy(busier, tmp_path / "busy_slower", "summary", ("latency",), lambda v: pc.multiply(v, 2.0))
    proc = run_cli([str(sweep), str(slower)], tmp_path, module="pipeline.compare")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert ("precision=fp32: not comparable: other processes took 5% vs 18% of the CPU while measuring "
            "(B 100% worse: not called a regression)") in proc.stdout
    assert "REGRESSED" not in proc.stdout and "2 not comparable" in proc.stdout.splitlines()[-1]
    strict = run_cli([str(sweep), str(slower), "--strict"], tmp_path, module="pipeline.compare")
    assert strict.returncode == 1, strict.stdout


def test_a_slower_point_says_which_layers_took_the_time(sweep, tmp_path):
    slow = altered_copy(sweep, tmp_path / "slow", "summary", ("latency",), lambda v: pc.multiply(v, 3.0))
    for path in slow.glob("*/tables/layers.parquet"):  # every layer three times slower
        t = pq.read_table(path)
        t = t.set_column(t.column_names.index("time_ms"), "time_ms", pc.multiply(t["time_ms"], 3.0))
        pq.write_table(t, path)
        (path.parent / results.MANIFEST).unlink(missing_ok=True)
    proc = run_cli([str(sweep), str(slow)], tmp_path, module="pipeline.compare")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    layers = results.load(sweep, tables=("runs", "layers"))
    fp32 = layers.runs.loc[layers.runs["precision"] == "fp32", "run_id"].iloc[0]
    mine = layers.layers[layers.layers["run_id"] == fp32].sort_values("time_ms")
    total, top = mine["time_ms"].sum(), mine.iloc[-1]
    assert f"precision=fp32: layers: {total:.4g} -> {3 * total:.4g} ms per inference" in proc.stdout
    assert f"  +{2 * top.time_ms:.3g} ms  {top.layer} ({top.layer_type}): " in proc.stdout


def test_by_pairs_a_sweep_with_its_rerun_at_other_trials_without_a_regression(measured, tmp_path):
    """The issue's case: the same sweep run again (here with benchmark.trials=3) is no regression, and --by says
    which setting differs. Both as measured: within the noise, or not comparable where the host was busy."""
    sweep = measured
    proc = run_cli(["-m", "model=tiny_cnn", "precision=fp32,int8,bf16", "backend=onnxruntime", "report.enabled=false",
                    "benchmark.trials=3", *FAST], tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    again = next((tmp_path / "outputs/sweeps/multirun").iterdir())
    by_hash = run_cli([str(sweep), str(again)], tmp_path, module="pipeline.compare")
    assert by_hash.returncode == 2 and "--by KEYS pairs by swept values" in by_hash.stderr  # trials is in the hash
    out = run_cli([str(sweep), str(again), "--by", "precision"], tmp_path, module="pipeline.compare")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "3 pair(s) by precision" in out.stdout
    assert "other settings that differ between paired jobs: benchmark.trials 1 -> 3" in out.stdout
    assert "REGRESSED" not in out.stdout
    noise_of = {line.split()[0]: line for line in out.stdout.splitlines() if line.startswith("precision=")}
    assert "±" in noise_of["precision=fp32"]  # measured on both sides, shown


@pytest.mark.parametrize("by, said", [
    ("nope", "--by nope: A's precision=fp32 has no value for it; keys swept in A: precision"),
    ("batch_size", "--by batch_size: A has several jobs with batch_size=1 that differ in precision"),
    ("precision,", "--by 'precision,': expected swept keys separated by commas"),
])
def test_a_bad_by_is_one_line(sweep, tmp_path, by, said):
    proc = run_cli([str(sweep), str(sweep), "--by", by], tmp_path, module="pipeline.compare")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.startswith("error: ") and said in proc.stderr and len(proc.stderr.strip().splitlines()) == 1

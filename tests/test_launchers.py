"""Hydra's launchers give the same rows as a serial sweep, and shared artifacts are still built once."""
import pandas as pd
import pytest

from pipeline import results
from tests.conftest import FAST, run_cli

pytestmark = pytest.mark.slow
POINTS = ["-m", "precision=fp32,int8,bf16"]


def sweep(cwd, *extra):
    proc = run_cli([*POINTS, "hydra.sweep.dir=sweep", *FAST, *extra], cwd)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r = results.load(cwd / "sweep")
    runs = r.runs.set_index("precision").sort_index()
    acc = r.accuracy.query("metric == 'rel_l2_err'").merge(r.runs[["run_id", "precision"]]).set_index("precision")
    return runs, acc["value"].sort_index()


@pytest.fixture(scope="module")
def serial(tmp_path_factory):
    return sweep(tmp_path_factory.mktemp("serial"))


@pytest.mark.parametrize("launcher", ["parallel", "local"])
def test_launcher_matches_serial(serial, tmp_path, launcher):
    runs, acc = sweep(tmp_path, f"hydra/launcher={launcher}")
    serial_runs, serial_acc = serial
    assert runs["status"].to_dict() == serial_runs["status"].to_dict()
    assert runs["error"].fillna("").to_dict() == serial_runs["error"].fillna("").to_dict()
    assert (runs["config_hash"] == serial_runs["config_hash"]).all()
    assert acc.to_dict() == serial_acc.to_dict()  # same artifacts, same seeded inputs: identical accuracy
    assert sorted(runs["export_cache"]) == ["hit", "hit", "miss"]  # one export for the whole sweep


def test_a_preempted_point_is_requeued_and_the_others_kept(tmp_path):
    """SLURM's preemption through submitit (its local executor: the same signal handling, no cluster): the point
    that gets SIGUSR2 is requeued by submitit and runs again to its row; the other point runs once."""
    marker = tmp_path / "preempted"
    proc = run_cli(["-m", "hydra/launcher=local", "model=factory", "model._target_=tests.factories.preempted_once",
                    f"+model.kwargs.marker={marker}", "model.input_shape=[3,32,32]", "precision=fp32,int8",
                    "hydra.sweep.dir=sweep", *FAST], tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert marker.exists()  # the preemption happened
    logs = "".join(p.read_text() for p in (tmp_path / "sweep/.submitit").rglob("*_log.out"))
    assert "this job is preempted" in logs and "Requeued job" in logs, logs[-3000:]
    assert logs.count("Starting with JobEnvironment") == 3, logs[-3000:]  # two points, one of them twice
    runs = results.load(tmp_path / "sweep").runs
    assert sorted(runs.status) == ["ok", "ok"] and sorted(runs.precision) == ["fp32", "int8"]


def test_parallel_cpu_measurements_take_turns_and_each_job_shows_its_progress(tmp_path):
    """hydra/launcher=parallel (joblib, 2 workers): two CPU benchmarks used to run at once, each measuring the other
    (digits fp32 throughput fell from 21k to 5.6k samples/s), and the workers printed no progress at all."""
    proc = run_cli(["-m", "precision=fp32,fp16", "hydra/launcher=parallel", "hydra.launcher.n_jobs=2",
                    "hydra.sweep.dir=sweep", *FAST, "benchmark.duration_s=1.5", "report.enabled=false"], tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    runs = results.load(tmp_path / "sweep").runs.sort_values("benchmark_measured_from")
    assert list(runs.status) == ["ok", "ok"]
    spans = [(pd.Timestamp(a), pd.Timestamp(b))
             for a, b in zip(runs.benchmark_measured_from, runs.benchmark_measured_to, strict=True)]
    assert spans[0][1] <= spans[1][0], spans  # one after the other, never at once
    assert (runs.benchmark_lock_wait_s >= 0).all() and (runs.benchmark_lock_wait_s < 120).all()
    for k, precision in ((1, "fp32"), (2, "fp16")):  # each worker's plain lines, prefixed by its job
        for event in ("started", "benchmark (", "benchmark off", "ok"):
            assert f"[job {k}/2 precision={precision}] {event}" in proc.stdout, proc.stdout[-3000:]

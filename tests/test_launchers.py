"""Hydra's launchers give the same rows as a serial sweep, and shared artifacts are still built once."""
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

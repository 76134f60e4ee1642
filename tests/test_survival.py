"""Nothing measured is lost: crashes, kill -9 at the worst moments, corruption, concurrency, resume, trust."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline import results
from pipeline.run import cache as cachemod
from pipeline.run import job
from tests.conftest import FAST, ROOT, config_with, run_cli

pytestmark = pytest.mark.slow


# ---------------------------------------------------------------- crash isolation (fake stages, in-process)

@pytest.mark.parametrize("fail, words", [
    ("segfault", ["crashed with signal SIGSEGV"]),
    ("hang", ["timed out after 2 s", "isolation.timeout_s"]),
])
def test_crash_in_an_isolated_stage_is_a_failed_row(base_config, tmp_path, fail, words):
    cfg, _ = config_with(base_config, tmp_path, fail=fail)
    cfg["isolation"] = {"mode": "all", "timeout_s": 2}
    out = job.run_job(cfg, tmp_path / "j", job.JobMeta())
    assert out.status == "failed"
    for word in words:
        assert word in out.error
    assert not list((tmp_path / "cache" / "entries").glob("*/*"))  # the half artifact never became an entry
    assert results.load(tmp_path / "j").runs["status"].tolist() == ["failed"]


def test_isolated_stage_passes_results_and_unsupported_through(base_config, tmp_path):
    cfg, counter = config_with(base_config, tmp_path)
    cfg["isolation"] = {"mode": "all", "timeout_s": 60}
    ok = job.run_job(cfg, tmp_path / "ok", job.JobMeta())
    assert ok.status == "ok" and ok.row["second_chars"] == 2 and counter.read_text().count("built") == 2
    cfg, _ = config_with(base_config, tmp_path, fail="unsupported")
    cfg["isolation"] = {"mode": "all", "timeout_s": 60}
    assert job.run_job(cfg, tmp_path / "u", job.JobMeta()).status == "unsupported"


# ---------------------------------------------------------------- kill -9, then resume

def fault_cli(fault: str, args: list[str], cwd: Path, precision: str | None = None):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if precision:
        env["FAULT_PRECISION"] = precision
    return subprocess.run([sys.executable, str(ROOT / "tests/fault_cli.py"), fault, *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def assert_cache_sound(cache_dir: Path):
    entries = list((cache_dir / "entries").glob("*/*"))
    assert entries
    for entry in entries:
        manifest, problems = cachemod.verify_entry(entry, entry.name)
        assert manifest is not None and not problems, (entry, problems)


@pytest.mark.parametrize("fault", ["export", "build", "table:runs"])
def test_kill_9_then_resume_completes_and_keeps_results(workdir, fault):
    sweep_dir = workdir / "sweep"
    args = ["-m", "precision=fp32,int8", f"hydra.sweep.dir={sweep_dir}", *FAST]
    killed = fault_cli(fault, args, workdir, precision="int8")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    before = results.load(sweep_dir).runs
    if fault == "export":  # the very first stage of the first job: nothing completed
        assert before.empty
    else:
        assert before.set_index("precision").loc["fp32", "status"] == "ok"  # job 0 finished before the kill
    resumed = run_cli([*args, "resume=true"], workdir)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    after = results.load(sweep_dir)
    assert after.skipped == []
    runs = after.runs.set_index("precision")
    assert list(runs.loc[["fp32", "int8"], "status"]) == ["ok", "ok"]
    if fault != "export":
        assert runs.loc["fp32", "run_id"] == before.set_index("precision").loc["fp32", "run_id"]  # kept
    assert_cache_sound(workdir / "outputs/cache")


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.mark.parametrize("table", ["runs", "summary", "samples", "accuracy", "layers", "published"])
def test_kill_9_while_writing_the_tables_never_leaves_an_ok_row_without_them(workdir, shared_cache, table):
    args = ["hydra.run.dir=run", f"cache.dir={shared_cache}", *FAST]
    killed = fault_cli(f"table:{table}", args, workdir)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    before = results.load(workdir / "run")
    if table == "published":  # the rename that publishes the tables came before the kill: all of them
        assert list(before.runs.status) == ["ok"] and before.skipped == []
        assert {len(before.summary) > 0, len(before.samples) > 0, len(before.accuracy) > 0} == {True}
    else:  # no table of the job is visible, and load says which job is incomplete
        assert before.runs.empty and before.summary.empty and before.accuracy.empty
        assert [(p.name, why) for p, why in before.skipped] == [("run", results.INCOMPLETE)]
    resumed = run_cli([*args, "resume=true"], workdir)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    after = results.load(workdir / "run")
    assert list(after.runs.status) == ["ok"] and after.skipped == []
    assert not after.accuracy.empty and not after.layers.empty
    if table == "published":
        assert after.runs.run_id.tolist() == before.runs.run_id.tolist()  # kept, not rerun


def test_a_full_disk_fails_its_point_and_the_sweep_goes_on(workdir):
    args = ["-m", "precision=fp32,int8", "hydra.sweep.dir=partial", *FAST]
    partial = fault_cli("enospc:samples", args, workdir, precision="fp32")
    assert partial.returncode == 1 and "Traceback" not in partial.stdout + partial.stderr
    runs = results.load(workdir / "partial").runs.set_index("precision")
    assert runs.loc["int8", "status"] == "ok" and runs.loc["fp32", "status"] == "failed"
    error = runs.loc["fp32", "error"]
    assert "No space left on device" in error and "the job itself was ok" in error
    assert "sweep " in partial.stdout  # the end-of-sweep summary still prints

    args = ["-m", "precision=fp32,int8", "hydra.sweep.dir=nothing", *FAST]
    nothing = fault_cli("enospc:all", args, workdir, precision="fp32")
    assert nothing.returncode == 1 and "Traceback" not in nothing.stdout + nothing.stderr
    assert "cannot write its results" in nothing.stdout + nothing.stderr
    assert "lost: 1 job(s)" in nothing.stdout
    runs = results.load(workdir / "nothing").runs
    assert runs.precision.tolist() == ["int8"] and runs.status.tolist() == ["ok"]


def test_an_exception_escaping_a_job_is_its_failed_row_and_the_sweep_goes_on(workdir):
    """An exception outside the job's own handling used to leave only "lost: 1 job(s) left no runs row (killed?)",
    its message nowhere."""
    args = ["-m", "precision=fp32,int8", "hydra.sweep.dir=s", "report.enabled=false", *FAST]
    proc = fault_cli("raise:runner", args, workdir, precision="int8")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out[-3000:]
    assert "lost" not in proc.stdout and "the runner broke outside any stage" in out
    runs = results.load(workdir / "s").runs.set_index("precision")
    assert runs.loc["fp32", "status"] == "ok" and runs.loc["int8", "status"] == "failed"
    assert runs.loc["int8", "error"] == "RuntimeError: the runner broke outside any stage (traceback: error.txt)"
    job_dir = workdir / "s" / str(runs.loc["int8", "job"])
    assert "Traceback" in (job_dir / "error.txt").read_text()
    assert "sweep " in proc.stdout and "1 failed, 1 ok" in proc.stdout  # the summary


def test_an_exception_outside_run_job_is_that_points_failed_row_and_the_summary_still_comes(workdir):
    """Resume's check of an earlier result runs before run_job: an error there fails its point alone (the sweeper
    would otherwise stop the sweep at the raised exception, without a summary)."""
    args = ["-m", "precision=fp32,int8", "resume=true", "hydra.sweep.dir=s", "report.enabled=false", *FAST]
    proc = fault_cli("raise:resume", args, workdir, precision="int8")
    assert proc.returncode == 1, (proc.stdout + proc.stderr)[-3000:]
    runs = results.load(workdir / "s").runs.set_index("precision")
    assert runs.loc["fp32", "status"] == "ok" and runs.loc["int8", "status"] == "failed"
    assert runs.loc["int8", "error"] == "ValueError: the resume check broke"
    assert "1 failed, 1 ok" in proc.stdout  # the summary


def test_the_writability_probe_writes_real_bytes(tmp_path, monkeypatch, capsys):
    import errno

    from pipeline.run import app

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(app.os, "fsync", full)  # a full disk refuses the bytes, not the empty file
    with pytest.raises(SystemExit):
        app._require_writable(str(tmp_path / "out"), "hydra.run.dir")
    assert "No space left on device" in capsys.readouterr().err
    assert list((tmp_path / "out").iterdir()) == []  # the probe is gone


def test_a_read_only_cache_still_serves_its_hits(workdir):
    args = ["hydra.run.dir=warm", *FAST]
    assert run_cli(args, workdir).returncode == 0
    ro = fault_cli("readonly-cache", ["hydra.run.dir=ro", *FAST], workdir)
    assert ro.returncode == 0, ro.stdout[-2000:]
    row = results.load(workdir / "ro").runs.iloc[0]
    assert (row.status, row.export_cache, row.convert_cache, row.build_cache) == ("ok", "hit", "hit", "hit")
    miss = fault_cli("readonly-cache", ["hydra.run.dir=miss", "precision=fp16", *FAST], workdir)
    row = results.load(workdir / "miss").runs.iloc[0]
    assert miss.returncode == 1 and row.status == "failed" and "Traceback" not in miss.stdout
    assert "cannot be written" in row.error and "point cache.dir at a writable directory" in row.error


def test_sigterm_mid_sweep_records_the_rest_and_prints_the_summary(workdir):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "pipeline", "-m", "precision=fp32,fp16,int8", "hydra.sweep.dir=s",
                             "benchmark.duration_s=60", "report.enabled=false"],
                            cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (workdir / "s/0/stages/benchmark").exists() and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1 and "Traceback" not in out + err, err[-3000:]
    assert "interrupted (SIGTERM) during job 0" in err
    runs = results.load(workdir / "s").runs.set_index("precision")
    assert runs.loc["fp32", "error"] == "interrupted (SIGTERM)"
    for precision in ("fp16", "int8"):
        assert runs.loc[precision, "status"] == "failed" and runs.loc[precision, "error"].startswith("not run")
    assert "sweep " in out and "3 failed" in out  # the summary


def test_sigterm_while_a_finished_job_writes_its_tables_keeps_its_complete_tables(workdir):
    args = ["-m", "precision=fp32,int8", "hydra.sweep.dir=s", "report.enabled=false", *FAST]
    proc = fault_cli("sigterm:table:summary", args, workdir, precision="fp32")  # job 0, half its tables written
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1 and "Traceback" not in out, out[-3000:]
    assert "lost" not in proc.stdout and "its row is recorded as ok" in proc.stderr
    loaded = results.load(workdir / "s")
    assert loaded.skipped == []
    runs = loaded.runs.set_index("precision")
    assert runs.loc["fp32", "status"] == "ok"
    assert runs.loc["fp32", "run_id"] in set(loaded.summary.run_id)
    assert runs.loc["int8", "status"] == "failed" and runs.loc["int8", "error"].startswith("not run")
    assert "sweep " in proc.stdout and "best:" in proc.stdout


@pytest.mark.parametrize("moment, ok", [("compose", []), ("between", ["fp32"]),
                                        ("summary", ["fp32", "fp16", "int8"])])
def test_sigterm_outside_a_job_stops_the_sweep_cleanly(workdir, moment, ok):
    """Between jobs (Hydra composing the next point), in the sweeper before any job, during the summary: the points
    not run yet get `not run` rows, the summary and the selection still come, the exit status is 1."""
    args = ["-m", "precision=fp32,fp16,int8", "hydra.sweep.dir=s", "report.enabled=false", *FAST]
    proc = fault_cli(f"sigterm:{moment}", args, workdir)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1 and "Traceback" not in out, out[-3000:]
    runs = results.load(workdir / "s").runs.set_index("precision")
    assert sorted(runs.index) == ["fp16", "fp32", "int8"]
    for precision in ("fp32", "fp16", "int8"):
        if precision in ok:
            assert runs.loc[precision, "status"] == "ok"
        else:
            assert runs.loc[precision, "status"] == "failed" and runs.loc[precision, "error"].startswith("not run")
    assert "sweep " in proc.stdout and "best:" in proc.stdout  # the summary, and the choice
    assert (workdir / "s" / results.SELECTION_FILE).is_file()


def test_kill_9_of_one_submitit_job_is_a_lost_row_and_the_sweep_goes_on(workdir):
    """hydra/launcher=local (submitit): one job's process dies outright; submitit raises for it, which used to
    end the sweep. Now that point is a failed `lost` row, the other's result is kept and the summary runs."""
    marker = workdir / "killed"
    proc = run_cli(["-m", "hydra/launcher=local", "model=factory", "model._target_=tests.factories.killed_once",
                    f"+model.kwargs.marker={marker}", "model.input_shape=[3,32,32]", "precision=fp32,int8",
                    "hydra.sweep.dir=sweep", "report.enabled=false", *FAST], workdir)
    out = proc.stdout + proc.stderr
    assert marker.exists()  # the kill happened
    assert proc.returncode == 1 and "Traceback" not in out, out[-3000:]
    runs = results.load(workdir / "sweep").runs
    assert sorted(runs.precision) == ["fp32", "int8"] and sorted(runs.status) == ["failed", "ok"], runs
    assert runs.set_index("status").loc["failed", "error"].startswith("lost: its process ended without a result")
    assert "sweep " in proc.stdout and "best:" in proc.stdout


def test_a_disk_full_for_hydras_own_files_fails_those_points_only(workdir):
    """Hydra writes <job>/.hydra/*.yaml before the job starts; on a full disk that failed the whole sweep."""
    args = ["-m", "precision=fp32,fp16,int8", "hydra.sweep.dir=full", "report.enabled=false", *FAST]
    proc = fault_cli("enospc:hydra", args, workdir)  # the disk fills during job 0
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1 and "Traceback" not in out, out[-3000:]
    runs = results.load(workdir / "full").runs.set_index("precision")
    assert runs.loc["fp32", "status"] == "ok"
    for precision in ("fp16", "int8"):
        error = runs.loc[precision, "error"]
        assert runs.loc[precision, "status"] == "failed"
        assert error.startswith("hydra.sweep.dir = ") and "is full" in error and "No space left on device" in error
        assert ".hydra" in error
    assert "sweep " in proc.stdout and "2 failed, 1 ok" in proc.stdout  # the summary


def test_lost_job_is_reported_and_fails_the_sweep(workdir):
    sweep_dir = workdir / "sweep"
    (sweep_dir / "7" / ".hydra").mkdir(parents=True)  # a job Hydra started that never wrote its row
    proc = run_cli(["-m", "precision=fp32", f"hydra.sweep.dir={sweep_dir}", *FAST], workdir)
    assert proc.returncode == 1
    assert "lost: 1 job(s)" in proc.stdout and "resume=true" in proc.stdout


# ---------------------------------------------------------------- corruption, concurrency, bad places

def test_corrupted_artifact_is_detected_and_rebuilt(workdir):
    assert run_cli(FAST, workdir).returncode == 0
    entries = [e for e in (workdir / "outputs/cache/entries").glob("*/*")
               if '"stages.onnxruntime.build"' in (e / "manifest.json").read_text()]
    model = entries[0] / "model.onnx"
    model.chmod(0o644)  # published artifacts are read-only
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    proc = run_cli(FAST, workdir)
    assert proc.returncode == 0
    assert "model.onnx: sha256 mismatch" in proc.stdout + proc.stderr
    runs = results.load(workdir / "outputs/runs").runs.sort_values("started")
    assert list(runs["build_cache"]) == ["miss", "miss"] and list(runs["export_cache"]) == ["miss", "hit"]
    assert list((workdir / "outputs/cache/quarantine").iterdir())
    assert_cache_sound(workdir / "outputs/cache")


def test_four_concurrent_identical_runs_build_each_artifact_once(workdir):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-m", "pipeline", f"hydra.run.dir=run{i}", "precision=int8", *FAST],
                              cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for i in range(4)]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], outputs
    runs = results.load(workdir).runs
    assert list(runs["status"]) == ["ok"] * 4
    for stage in ("export", "convert", "build"):
        assert sorted(runs[f"{stage}_cache"]) == ["hit"] * 3 + ["miss"], stage
    assert len(list((workdir / "outputs/cache/entries").glob("*/*"))) == 3
    assert_cache_sound(workdir / "outputs/cache")


@pytest.mark.parametrize("key", ["hydra.run.dir", "cache.dir"])
def test_unwritable_output_gets_a_clear_error(workdir, key):
    (workdir / "a_file").write_text("not a directory")
    proc = run_cli([f"{key}={workdir / 'a_file' / 'sub'}", *FAST], workdir)
    assert proc.returncode != 0
    text = proc.stdout + proc.stderr
    assert "Traceback" not in text
    assert str(workdir / "a_file") in text and ("Not a directory" in text or "not writable" in text), text[-2000:]


def test_sigterm_records_an_interrupted_row(workdir):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "pipeline", "hydra.run.dir=run", "benchmark.duration_s=60"],
                            cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    while not (workdir / "run/stages/benchmark").exists() and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 1 and "Traceback" not in out
    row = results.load(workdir / "run").runs.iloc[0]
    assert (row.status, row.error) == ("failed", "interrupted (SIGTERM)")
    assert row.export_cache == "miss"  # what ran before the signal is recorded too


# ---------------------------------------------------------------- a factory model, and trusting configs

def test_factory_model_and_reproduce_trust(workdir):
    args = ["model=factory", "model._target_=tests.factories.tiny", "model.input_shape=[3,32,32]", *FAST]
    proc = run_cli(args, workdir)
    assert proc.returncode == 0, proc.stdout[-2000:]
    run_dir = next((workdir / "outputs/runs").iterdir())
    assert results.load(run_dir).runs.iloc[0].status == "ok"
    refused = run_cli([str(run_dir), "--out", "r1"], workdir, module="pipeline.reproduce")
    assert refused.returncode == 2 and not (workdir / "r1").exists()
    assert "model._target_ = 'tests.factories.tiny'" in refused.stderr and "--trust" in refused.stderr
    allowed = run_cli([str(run_dir), "--out", "r2", "--allow", "tests.factories"], workdir, module="pipeline.reproduce")
    assert allowed.returncode == 0, allowed.stderr[-2000:]
    assert results.load(workdir / "r2").runs.iloc[0].export_cache == "hit"
    trusted = run_cli([str(run_dir), "--out", "r3", "--trust"], workdir, module="pipeline.reproduce")
    assert trusted.returncode == 0

"""MLflow tracking (`hydra/callbacks=mlflow`): jobs logged as runs of a real local MLflow store (SQLite under
tmp_path), read back through MLflow's own client and held against `results.load`; a tracker that is down or refuses
a write costs a warning, never a result."""
import json
import logging
import socket

import pytest
from omegaconf import OmegaConf

from pipeline import results
from pipeline.config.trust import untrusted
from pipeline.run.mlflow_tracking import RUN_ID_TAG, MlflowTracking
from tests.conftest import FAST, run_cli

mlflow = pytest.importorskip("mlflow")


@pytest.fixture(scope="session")
def cache(tmp_path_factory) -> str:
    """One artifact cache for the CLI runs of this file and tests/test_hf_datasets.py: the digits model is trained
    and exported once a session (a pytest-xdist worker's)."""
    return f"cache.dir={tmp_path_factory.getbasetemp() / 'digits-cache'}"


def store(tmp_path) -> dict:
    return {"tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "artifact_location": str(tmp_path / "artifacts")}


def logged(tmp_path, experiment: str) -> dict:
    """Our run id -> its MLflow run, read back through MLflow's client."""
    client = mlflow.MlflowClient(store(tmp_path)["tracking_uri"])
    found = client.get_experiment_by_name(experiment)
    assert found is not None, [e.name for e in client.search_experiments()]
    return {r.data.tags.get(RUN_ID_TAG): r for r in client.search_runs([found.experiment_id])}


def a_job(job_dir, run_id="r-1", status="ok", error=None):
    """A job's tables as the job writes them (results.write_tables), with a config file beside them."""
    results.write_tables(job_dir, {
        "runs": [{"run_id": run_id, "sweep": "precision", "job": 0, "status": status, "error": error,
                  "backend": "onnxruntime", "model": "digits", "precision": "int8", "batch_size": 8,
                  "overrides": "precision=int8 batch_size=8 cache.dir=/c hydra.run.dir=x", "config_hash": "abc",
                  "started": "2026-12-05T06:00:00", "axes_sequence": 32}],
        "summary": [{"run_id": run_id, "metric": "latency", "stat": "median", "value": 0.25, "unit": "ms"},
                    {"run_id": run_id, "metric": "throughput", "stat": "samples_per_s", "value": 3.2e4,
                     "unit": "samples/s"}],
        "accuracy": [{"run_id": run_id, "output": "logits", "metric": "top1_accuracy_drop", "value": 0.004,
                      "reference": "fp32", "samples": 359}],
    })
    (job_dir / results.JOB_CONFIG).write_text("precision: int8\n")
    return OmegaConf.create({"hydra": {"runtime": {"output_dir": str(job_dir)}}})


def test_a_job_is_logged_with_what_its_tables_say(tmp_path):
    tracking = MlflowTracking(**store(tmp_path))
    tracking.on_job_end(a_job(tmp_path / "job", error=None))
    tracking.on_job_end(a_job(tmp_path / "job2", run_id="r-2", status="failed", error="build: crashed"))
    loaded = results.load(tmp_path)
    runs = logged(tmp_path, "precision")
    assert set(runs) == set(loaded.runs.run_id) == {"r-1", "r-2"}
    one = runs["r-1"]
    assert one.data.params["precision"] == "int8" and one.data.params["batch_size"] == "8"
    assert one.data.params["axes_sequence"] == "32" and one.data.params["config_hash"] == "abc"
    assert "cache.dir" not in one.data.params and "hydra.run.dir" not in one.data.params  # they change no result
    assert one.info.run_name == "precision=int8 batch_size=8"
    summary = loaded.summary.set_index(["run_id", "metric", "stat"]).value
    assert one.data.metrics["latency/median"] == summary["r-1", "latency", "median"]
    assert one.data.metrics["throughput/samples_per_s"] == summary["r-1", "throughput", "samples_per_s"]
    accuracy = loaded.accuracy.set_index(["run_id", "metric"]).value
    assert one.data.metrics["accuracy/logits/top1_accuracy_drop"] == accuracy["r-1", "top1_accuracy_drop"]
    assert one.data.tags["status"] == "ok" and "error" not in one.data.tags and one.info.status == "FINISHED"
    two = runs["r-2"]
    assert (two.data.tags["status"], two.data.tags["error"], two.info.status) == ("failed", "build: crashed", "FAILED")
    client = mlflow.MlflowClient(store(tmp_path)["tracking_uri"])
    assert [a.path for a in client.list_artifacts(one.info.run_id)] == [results.JOB_CONFIG]
    # a job logged already (a resumed sweep's kept job) is not logged twice
    tracking.on_job_end(a_job(tmp_path / "job", error=None))
    assert len(logged(tmp_path, "precision")) == 2


def test_a_sweep_run_parents_its_jobs_and_tags_the_choice_once_even_when_resumed(tmp_path):
    sweep = tmp_path / "sweep"
    tracking = MlflowTracking(**store(tmp_path))
    for job, run_id in enumerate(("r-0", "r-1")):
        tracking.on_job_end(a_job(sweep / str(job), run_id=run_id))
    (sweep / results.SELECTION_FILE).write_text(json.dumps({"selected": "r-1", "points": {}}))
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep)}}})
    for _ in range(2):  # the second: a resumed sweep ending again in the same directory
        tracking.on_multirun_end(config)
    runs = logged(tmp_path, "precision")
    sweeps = [r for r in runs.values() if r.data.tags.get("pipeline.kind") == "sweep"]
    assert len(sweeps) == 1 and len(runs) == 3, runs
    parent = sweeps[0].info.run_id
    assert {runs[r].data.tags["mlflow.parentRunId"] for r in ("r-0", "r-1")} == {parent}
    assert (runs["r-0"].data.tags["selected"], runs["r-1"].data.tags["selected"]) == ("false", "true")
    assert sweeps[0].data.tags["selected_run"] == runs["r-1"].info.run_id
    assert list(results.load(sweep).runs.selected) == [False, True]  # what the tags were held against


def test_a_store_that_refuses_a_write_costs_a_warning_and_is_not_tried_again(tmp_path, monkeypatch, caplog):
    def refuse(*args, **kwargs):
        raise mlflow.exceptions.MlflowException("the store is read-only")

    monkeypatch.setattr(mlflow.MlflowClient, "log_batch", refuse)
    tracking = MlflowTracking(**store(tmp_path))
    with caplog.at_level(logging.WARNING, logger="pipeline.run.mlflow_tracking"):
        tracking.on_job_end(a_job(tmp_path / "job"))
        tracking.on_job_end(a_job(tmp_path / "job2", run_id="r-2"))
    lines = [r.getMessage() for r in caplog.records]
    assert "not logged (MlflowException: the store is read-only)" in lines[0], lines
    assert "failed earlier" in lines[1], lines
    assert list(results.load(tmp_path).runs.status) == ["ok", "ok"]  # the tables are untouched


def test_the_callback_is_a_trusted_target():
    assert untrusted({"_target_": "pipeline.run.mlflow_tracking.MlflowTracking"}) == []
    assert untrusted({"_target_": "pipeline.run.mlflow_tracking.job_params"})  # only the callback is listed


@pytest.mark.slow
def test_a_sweep_logs_every_job_its_report_and_its_choice(tmp_path, cache):
    where = store(tmp_path)
    proc = run_cli(["-m", "hydra/callbacks=mlflow", f"hydra.callbacks.mlflow.tracking_uri={where['tracking_uri']}",
                    f"hydra.callbacks.mlflow.artifact_location={where['artifact_location']}",
                    "hydra.callbacks.mlflow.experiment=team", "precision=fp32,fp16", "report.enabled=true", cache,
                    *FAST], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    loaded = results.load(tmp_path / "outputs")
    runs = logged(tmp_path, "team")
    sweep = runs.pop(None)  # the sweep's own run has no job run id
    assert set(runs) == set(loaded.runs.run_id) and len(runs) == 2
    median = loaded.metric("latency").set_index("run_id")["latency_median"]
    for row in loaded.runs.itertuples():
        run = runs[row.run_id]
        assert run.data.params["precision"] == row.precision and run.data.tags["status"] == row.status
        assert run.data.metrics["latency/median"] == median[row.run_id]
        assert run.data.tags["selected"] == str(bool(row.selected)).lower()
        assert run.data.tags["mlflow.parentRunId"] == sweep.info.run_id
    chosen = loaded.runs.loc[loaded.runs.selected, "run_id"].item()
    assert sweep.data.tags["selected_run"] == runs[chosen].info.run_id
    client = mlflow.MlflowClient(where["tracking_uri"])
    assert {a.path for a in client.list_artifacts(sweep.info.run_id)} == {"report", results.SELECTION_FILE}
    assert "report/index.html" in {a.path for a in client.list_artifacts(sweep.info.run_id, "report")}


@pytest.mark.slow
def test_a_tracker_that_cannot_be_reached_costs_a_warning_never_a_result(tmp_path, monkeypatch, cache):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")  # the team's server, from the environment
    proc = run_cli(["hydra/callbacks=mlflow", cache, *FAST], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    said = proc.stdout + proc.stderr  # Hydra logs to stdout
    assert "mlflow: job " in said and "not logged" in said, said[-3000:]
    assert list(results.load(tmp_path / "outputs").runs.status) == ["ok"]


def test_without_mlflow_installed_the_callback_says_how_to_get_it(tmp_path, monkeypatch, caplog):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    with caplog.at_level(logging.WARNING, logger="pipeline.run.mlflow_tracking"):
        tracking = MlflowTracking(**store(tmp_path))
        tracking.on_job_end(a_job(tmp_path / "job"))
    lines = [r.getMessage() for r in caplog.records]
    assert all("mlflow is not installed: pip install -e '.[mlflow]'" in line for line in lines) and len(lines) == 2
    assert not (tmp_path / "mlflow.db").exists()  # nothing was tried

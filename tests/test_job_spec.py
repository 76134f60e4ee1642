"""The job specification: a resolved config read once into typed pieces (pipeline/run/spec.py)."""
import copy
import dataclasses

import pytest

from pipeline.config import schema
from pipeline.run import job
from pipeline.run.spec import CacheSettings, Identity, IsolationSettings, JobSpec


def test_a_spec_from_a_config_holds_the_pieces_a_job_needs(base_config):
    cfg = copy.deepcopy(base_config)
    schema.check(cfg)
    spec = JobSpec.from_config(cfg)
    assert spec.identity == Identity("onnxruntime", cfg["model"]["name"], "fp32")
    assert spec.config_hash == job.config_hash(cfg)
    assert spec.backend is cfg["backend"] and spec.dag is cfg["backend"]["dag"]
    assert spec.options == {k: v for k, v in cfg["backend"].items() if k not in ("name", "plugin", "dag", "artifact")}
    assert spec.cache == CacheSettings(cfg["cache"]["dir"], True, "fast")
    assert spec.isolation == IsolationSettings("auto", float(cfg["isolation"]["timeout_s"]))
    assert spec.gpu_pin == "auto"
    assert spec.measurement.benchmark == cfg["benchmark"] and spec.measurement.validate == cfg["validate"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.config_hash = "x"


def test_a_reproduced_records_identity_is_kept(base_config):
    assert JobSpec.from_config(copy.deepcopy(base_config), "recorded").config_hash == "recorded"


def test_the_rows_names_come_from_any_config():
    assert Identity.of({"model": {"name": "m"}, "backend": "broken"}) == Identity(None, "m", None)
    assert Identity.of(None) == Identity(None, None, None)


def test_a_job_runs_from_its_spec_and_records_the_same_row(base_config, tmp_path):
    from tests.conftest import config_with

    cfg, _ = config_with(base_config, tmp_path)
    cfg["isolation"]["mode"] = "none"
    out = job.run_job(cfg, tmp_path / "j", job.JobMeta())
    assert out.status == "ok", out.error
    assert (out.row["backend"], out.row["precision"], out.row["config_hash"]) == (
        "onnxruntime", "fp32", job.config_hash(cfg))


def test_what_the_cli_glue_needs_comes_from_any_config(base_config):
    from pipeline.run.spec import Control

    cfg = copy.deepcopy(base_config)
    cfg["resume"], cfg["select"] = True, {"metric": "throughput/mean"}
    assert Control.of(cfg) == Control(True, {"metric": "throughput/mean"}, cfg["cache"]["dir"])
    assert Control.of({"select": "broken"}) == Control(False, None, "")  # a config that failed to compose


def test_a_rows_config_columns_come_from_any_config(base_config):
    from pipeline.run.spec import row_values

    cfg = copy.deepcopy(base_config)
    cfg["batch_size"], cfg["axes"] = 4, {"sequence": 16}
    row = row_values(cfg, ["batch_size=4", "benchmark.trials=3", "cache.dir=/elsewhere", "+model.kwargs.depth=2"])
    assert row["batch_size"] == 4 and row["axes_sequence"] == 16
    assert row["benchmark_trials"] == cfg["benchmark"]["trials"]  # an overridden scalar, under its dotted key
    assert "cache_dir" not in row and "model_kwargs_depth" not in row  # never changes a result; a group's key
    assert row_values({"model": {"name": "m"}, "batch_size": None}, ["batch_size=null"]) == {}  # failed to compose

"""A run recorded by an older main (tests/data/recorded/README.md) still reproduces, with the same trust rules and
the same config_hash, after the code it names has moved."""
import json
import shutil

import pytest

from pipeline import results
from tests.conftest import ROOT, run_cli

RECORDED = ROOT / "tests" / "data" / "recorded" / "default_before_rooms"

pytestmark = pytest.mark.slow


def test_a_run_recorded_before_the_rooms_reproduces_with_its_hash(workdir):
    src = workdir / "recorded"
    shutil.copytree(RECORDED, src)
    proc = run_cli([str(src), "--out", "again", "--cache-dir", "cache"], workdir, module="pipeline.reproduce",
                   timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    report = json.loads((workdir / "again" / "reproduction.json").read_text())[0]
    assert report["config_hash_same"] and report["status"] == {"original": "ok", "new": "ok"}, report
    old, new = results.load(src).runs.iloc[0], results.load(workdir / "again").runs.iloc[0]
    assert new.config_hash == old.config_hash and new.model == "digits"


def test_moved_stages_are_upgraded_explicitly_and_keep_their_hash():
    """The map (pipeline/config/renames.py): a backend's own measuring stage becomes the shared one with the params
    it takes; trtexec's path and extra_args become backend options; the recorded identity is unchanged."""
    from pipeline.config import renames
    from pipeline.run import job

    recorded = {"benchmark": {"warmup_ms": 200, "duration_s": 3.0, "min_iterations": 10, "trials": 1,
                              "cuda_graph": True, "sync": "spin", "data_transfers": False, "streams": 1},
                "backend": {"name": "trtexec", "plugin": "stages.trtexec", "path": "trtexec", "extra_args": [],
                            "dag": {"validate": {"stage": "stages.trtexec.validate",
                                                 "inputs": {"engine": "build.engine"},
                                                 "params": {"path": "/opt/trtexec", "extra_args": [], "seed": 0}},
                                    "benchmark": {"stage": "stages.onnxruntime.benchmark",
                                                  "params": {"seed": 0, "duration_s": 0.5}}}}}
    upgraded = renames.upgrade(recorded)
    dag = upgraded["backend"]["dag"]
    assert dag["validate"] == {"stage": "stages.validate", "inputs": {"engine": "build.engine"}, "params": {"seed": 0}}
    assert dag["benchmark"]["stage"] == "stages.benchmark"
    assert dag["benchmark"]["params"]["duration_s"] == 0.5 and dag["benchmark"]["params"]["streams"] == 1
    assert recorded["backend"]["dag"]["validate"]["stage"] == "stages.trtexec.validate"  # the record is untouched
    moved_path = {**recorded, "backend": {**recorded["backend"], "dag": {
        "validate": {**recorded["backend"]["dag"]["validate"],
                     "params": {**recorded["backend"]["dag"]["validate"]["params"], "path": "/elsewhere"}}}}}
    unmoved = {**recorded,
               "backend": {**recorded["backend"], "dag": {"validate": recorded["backend"]["dag"]["validate"]}}}
    assert job.config_hash(moved_path) == job.config_hash(unmoved)  # the old stage's path was keyed=False

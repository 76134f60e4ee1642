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

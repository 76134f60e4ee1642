"""`hydra/launcher=ray` runs a sweep as Ray tasks on a local Ray started for it, and every point leaves its row."""
import pytest

from pipeline import results
from tests.conftest import FAST, run_cli

pytest.importorskip("ray")
pytest.importorskip("hydra_plugins.hydra_ray_launcher")

pytestmark = pytest.mark.slow
PRECISIONS = ["fp32", "int8"]


def test_ray_sweep_rows(tmp_path):
    proc = run_cli(["-m", "model=tiny_cnn", "backend=onnxruntime", f"precision={','.join(PRECISIONS)}",
                    "hydra/launcher=ray", "hydra.sweep.dir=sweep", "report.enabled=false", *FAST], tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    # Ray's launcher ran it (not Hydra's basic one), on a Ray it started (address: local)
    assert f"Ray Launcher is launching {len(PRECISIONS)} jobs" in out, out[-4000:]
    assert "Started a local Ray instance" in out, out[-4000:]

    r = results.load(tmp_path / "sweep")
    assert not r.skipped
    runs = r.runs
    assert len(runs) == len(PRECISIONS)
    assert sorted(runs["precision"]) == sorted(PRECISIONS)
    assert (runs["status"] == "ok").all(), runs[["precision", "status", "error"]].to_string()

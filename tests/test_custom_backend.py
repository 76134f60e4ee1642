"""A backend that lives outside the repository: the shipped example, copied elsewhere, runs with backend=custom."""
import shutil

import pytest

from pipeline import results
from tests.conftest import FAST, ROOT, run_cli

pytestmark = pytest.mark.slow


@pytest.fixture
def outside(tmp_path):
    where = tmp_path / "somewhere_else"
    shutil.copytree(ROOT / "examples/custom_backend", where, ignore=shutil.ignore_patterns("outputs", "__pycache__"))
    return where


def test_the_example_backend_runs_from_its_own_folder(outside):
    proc = run_cli(["--config-dir", "conf", "-m", "backend=custom", "precision=fp32,int8", "hydra.sweep.dir=s",
                    *FAST], outside)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    loaded = results.load(outside / "s")
    runs = loaded.runs.set_index("precision")
    assert set(runs["status"]) == {"ok"} and set(runs["backend"]) == {"custom"}
    assert runs.loc["fp32", "optimized"] == True  # noqa: E712 - its option, as a runs column
    assert sorted(runs["export_cache"]) == ["hit", "miss"]  # the shared export -> convert subgraph
    assert (loaded.metric("latency")["latency_median"] > 0).all()
    acc = loaded.accuracy.query("metric == 'rel_l2_err'").set_index("run_id")["value"]
    assert acc[runs.loc["fp32", "run_id"]] < 1e-5 and acc[runs.loc["int8", "run_id"]] < 0.1


def test_its_options_are_checked(outside):
    typo = run_cli(["--config-dir", "conf", "backend=custom", "backend.optimised=false", *FAST], outside)
    assert typo.returncode == 1 and "backend.optimised" in typo.stderr and "optimized" in typo.stderr
    wrong = run_cli(["--config-dir", "conf", "backend=custom", "backend.optimized=maybe", *FAST], outside)
    assert wrong.returncode == 1 and "backend.optimized = 'maybe': expected bool" in wrong.stdout

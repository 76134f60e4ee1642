"""Shared helpers: run the real CLI in a scratch working directory, with short measurements."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Short but real measurements: the tests check plumbing and tables, not speed.
FAST = ["benchmark.duration_s=0.2", "benchmark.warmup_ms=20", "benchmark.min_iterations=5", "validate.batches=2"]


def run_cli(args: list[str], cwd: Path, module: str = "pipeline", timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HYDRA_FULL_ERROR": "0", "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path

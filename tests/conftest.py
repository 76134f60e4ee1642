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
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "PYTHONPATH": path, "HYDRA_FULL_ERROR": "0", "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def _has_cuda() -> bool:
    from stages.availability import gpu_count

    if not gpu_count():  # NVML first: no torch import on a CPU machine
        return False
    import torch

    return torch.cuda.is_available()


def pytest_collection_modifyitems(config, items):
    """`gpu` tests skip cleanly where CUDA is missing (they never pass vacuously)."""
    if any("gpu" in item.keywords for item in items) and not _has_cuda():
        skip = pytest.mark.skip(reason="needs a CUDA GPU")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path


# ---------------------------------------------------------------- orchestrator tests on fake stages

@pytest.fixture(scope="module")
def base_config():
    """The real default config, composed by Hydra, as the job runner receives it."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from pipeline.config import paths, schema

    schema.register()  # the `schema` node conf/config.yaml builds on

    with initialize_config_dir(config_dir=paths.CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="config", overrides=["backend=onnxruntime"])
    return OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)


def config_with(base, tmp_path, **params):
    """`base` with a three-node DAG of fake stages: two cached (counting builds in a file), one measurement."""
    import copy

    cfg = copy.deepcopy(base)
    counter = tmp_path / "builds.txt"
    cfg["cache"]["dir"] = str(tmp_path / "cache")
    cfg["backend"]["dag"] = {
        "first": {"stage": "tests.fake_stages", "params": {"text": "a", "counter": str(counter), "fail": None,
                                                           **params}},
        "second": {"stage": "tests.fake_stages", "inputs": {"data": "first.data"},
                   "params": {"text": "b", "counter": str(counter), "fail": None}},
        "measure": {"stage": "tests.fake_measure", "inputs": {"data": "second.data"}},
    }
    return cfg, counter

"""The Dockerfile (NVIDIA's TensorRT container; not built here: no Docker or GPU on this machine) copies enough of
the repository to install the package and compose the default config: its COPY lines replayed here, the result
installed into a fresh virtual environment and run from elsewhere."""
import shutil

import pytest

from tests.conftest import ROOT
from tests.test_install import fresh_venv, install, run

pytestmark = pytest.mark.slow


def copied(tmp_path):
    """The repository as the Dockerfile's COPY lines lay it out (`COPY file ... ./`, `COPY dir ./dir`)."""
    work = tmp_path / "workdir"
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if line.startswith("COPY "):
            *sources, dest = line.split()[1:]
            for src in sources:
                if (ROOT / src).is_dir():
                    shutil.copytree(ROOT / src, work / dest, ignore=shutil.ignore_patterns("__pycache__", "outputs"))
                else:
                    (work / dest).mkdir(parents=True, exist_ok=True)
                    shutil.copy(ROOT / src, work / dest / src)
    return work


def test_what_the_dockerfile_copies_installs_and_composes_the_default_config(tmp_path):
    site = fresh_venv(tmp_path / "venv")
    install(copied(tmp_path), site, tmp_path, "pip install .")
    python, elsewhere = tmp_path / "venv/bin/python", tmp_path / "elsewhere"
    elsewhere.mkdir()
    help_ = run(python, ["-m", "pipeline", "--help"], elsewhere)
    assert help_.returncode == 0 and "backend: " in help_.stdout and "Traceback" not in help_.stderr
    cfg = run(python, ["-m", "pipeline", "--cfg", "job", "backend=tensorrt"], elsewhere)
    assert cfg.returncode == 0 and "plugin: stages.tensorrt" in cfg.stdout, cfg.stderr[-2000:]
    sweeper = run(python, ["-m", "pipeline", "--cfg", "hydra", "backend=tensorrt"], elsewhere)
    assert "ResilientSweeper" in sweeper.stdout  # hydra_plugins/ came along: the default sweeper composes

"""Backends of other installed packages: found by their entry point (`trt_pipeline.backends`), their configs on
Hydra's search path (hydra_plugins/pipeline_backends), and `backend=auto` weighing them by the priority they declare.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline import results
from pipeline.config import paths, trust
from pipeline.run import plugins
from tests.conftest import FAST, ROOT


def _package(where: Path, name: str, body: str, backend: str | None = None) -> None:
    """A plugin package `name` under `where`; with `backend`, its conf/backend/<backend>.yaml too."""
    (where / name).mkdir(parents=True)
    (where / name / "__init__.py").write_text(body)
    if backend:
        (where / name / "conf/backend").mkdir(parents=True)
        (where / name / "conf/backend" / f"{backend}.yaml").write_text(
            f"defaults:\n  - onnxruntime\n  - _self_\nname: {backend}\nplugin: {name}\n")


PLUGIN = "from stages.onnxruntime import OPTIONS, REQUIRES, HOW_TO_GET  # noqa: F401\n"


@pytest.fixture
def installed(tmp_path, monkeypatch):
    """Fake installed backends (what the entry points would say), their packages importable from tmp_path."""
    monkeypatch.syspath_prepend(str(tmp_path))
    found = []

    def install(name: str, module: str, body: str, conf: bool = True):
        _package(tmp_path, module, body, name if conf else None)
        found.append(paths.Installed(name, module, f"dist-of-{name}"))

    monkeypatch.setattr(paths, "installed_backends", lambda: list(found))
    yield install
    for module in [b.plugin for b in found]:
        sys.modules.pop(module, None)


def test_auto_ranks_installed_backends_by_their_priority(installed):
    installed("between", "be_between", PLUGIN + "AUTO_PRIORITY = 250\n")
    installed("tied", "be_tied", PLUGIN + "AUTO_PRIORITY = 100\n")      # a tie: auto.yaml's onnxruntime first
    installed("last", "be_last", PLUGIN + "AUTO_PRIORITY = -5\n")
    installed("explicit", "be_explicit", PLUGIN)                        # no AUTO_PRIORITY: only by name
    installed("flag", "be_flag", PLUGIN + "AUTO_PRIORITY = True\n")     # not an int priority
    installed("onnxruntime", "be_clash", PLUGIN + "AUTO_PRIORITY = 999\n")  # the pipeline's own name wins
    installed("broken", "be_broken", "raise ImportError('no such runtime')\n")
    ranked = plugins.ranked(paths.CONF_DIR)
    assert [c.name for c in ranked] == ["broken", "tensorrt", "between", "torch", "onnxruntime", "tied", "last"]
    assert [c.priority for c in ranked] == [None, 300, 250, 200, 100, 100, -5]
    assert ranked[2].plugin == "be_between" and ranked[2].where == "dist-of-between"
    assert list(plugins.candidates(paths.CONF_DIR))[:3] == ["broken", "tensorrt", "between"]


def test_auto_picks_the_best_runnable_and_says_what_it_passed_over(installed, monkeypatch):
    installed("between", "be_between", PLUGIN + "AUTO_PRIORITY = 250\n")
    installed("broken", "be_broken", "raise ImportError('no such runtime')\n")
    unmet = {"stages.tensorrt": "tensorrt is not installed"}
    real = plugins._auto_unmet
    monkeypatch.setattr(plugins, "_auto_unmet", lambda package: unmet.get(package) or real(package))
    name, passed = plugins.best(paths.CONF_DIR)
    assert name == "between"
    assert passed == ["broken: its plugin be_broken does not import (ImportError)",
                      "tensorrt: tensorrt is not installed"]


def test_auto_yaml_candidates_need_a_priority(tmp_path):
    (tmp_path / "backend").mkdir()
    (tmp_path / "backend/auto.yaml").write_text("candidates:\n  onnxruntime: stages.onnxruntime\n")
    with pytest.raises(plugins.ConfigError, match="candidate onnxruntime must be"):
        plugins.ranked(tmp_path)


def test_an_installed_backends_configs_join_the_pipelines_search_path(installed, tmp_path):
    from hydra import compose, initialize_config_dir
    from hydra.core.plugins import Plugins
    from hydra.plugins.search_path_plugin import SearchPathPlugin

    from pipeline.config import schema

    found = {f"{p.__module__}.{p.__name__}" for p in Plugins.instance().discover(SearchPathPlugin)}
    assert "hydra_plugins.pipeline_backends.search_path.InstalledBackendsSearchPath" in found
    installed("mine", "be_mine", PLUGIN)
    schema.register()
    with initialize_config_dir(config_dir=paths.CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="config", overrides=["backend=mine", "backend.optimization_level=1"])
    assert (cfg.backend.name, cfg.backend.plugin, cfg.backend.optimization_level) == ("mine", "be_mine", 1)
    assert cfg.backend.dag.build.stage == "stages.onnxruntime.build"  # its YAML builds on the pipeline's configs
    # another Hydra app of the environment is left alone
    other = tmp_path / "other_app"
    other.mkdir()
    with initialize_config_dir(config_dir=str(other), version_base="1.3"):
        from hydra.core.global_hydra import GlobalHydra

        search = GlobalHydra.instance().config_loader().get_search_path()
        assert not [e for e in search.get_path() if e.provider.startswith("trt-pipeline-backend")]


def test_a_plugin_names_its_config_dir_when_its_package_has_none(installed, tmp_path):
    elsewhere = tmp_path / "configs_elsewhere"
    installed("named", "be_named", PLUGIN + f"CONF_DIR = {str(elsewhere)!r}\n", conf=False)
    installed("lost", "be_lost", PLUGIN, conf=False)
    by_name = {b.name: b for b in paths.installed_backends()}
    assert paths.installed_conf(by_name["named"]) == f"file://{elsewhere.resolve()}"
    assert paths.installed_conf(by_name["lost"]) is None


def test_trust_still_refuses_an_installed_backends_code(installed):
    """Installing a backend does not make a recorded config that names it trusted: reproduce needs --allow."""
    installed("mine", "be_mine", PLUGIN)
    config = {"backend": {"name": "mine", "plugin": "be_mine",
                          "dag": {"build": {"stage": "be_mine", "params": {}}}}}
    refused = trust.untrusted(config)
    assert len(refused) == 2 and all("code from outside this project" in r for r in refused)
    assert trust.untrusted(config, allowed=("be_mine",)) == []


# ---------------------------------------------------------------- a real package, installed into a fresh venv


@pytest.mark.slow
def test_pip_installed_backend_runs_by_name_and_by_auto(tmp_path):
    """The shipped example (examples/custom_backend, its own pyproject.toml), pip-installed into a fresh venv that
    sees this checkout on PYTHONPATH: `backend=custom` runs from a directory with no configs of its own, `--help`
    lists it, `backend=auto` takes it when its priority is highest, and reproducing its run still asks for trust
    (--allow its package)."""
    from tests.test_install import fresh_venv

    site = fresh_venv(tmp_path / "venv")
    package = Path(shutil.copytree(ROOT / "examples/custom_backend", tmp_path / "pkg",
                                   ignore=shutil.ignore_patterns("outputs", "__pycache__", "build", "*.egg-info")))
    with open(package / "custom_backend/__init__.py", "a") as f:
        f.write("AUTO_PRIORITY = 1000  # above every built-in backend\n")
    subprocess.run([sys.executable, "-m", "pip", "-q", "install", "--no-deps", "--no-build-isolation", "--target",
                    str(site), "."], cwd=package, check=True, capture_output=True, timeout=300)
    assert (site / "custom_backend/conf/backend/custom.yaml").is_file()
    python, elsewhere = tmp_path / "venv/bin/python", tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**{k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, "PYTHONPATH": str(ROOT),
           "PYTHONUNBUFFERED": "1", "HYDRA_FULL_ERROR": "0"}

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(python), *args], cwd=elsewhere, env=env, capture_output=True, text=True,
                              timeout=300)

    by_name = run("-m", "pipeline", "backend=custom", "profile.enabled=false", "hydra.run.dir=by_name", *FAST)
    assert by_name.returncode == 0, by_name.stdout[-3000:] + by_name.stderr[-3000:]
    row = results.load(elsewhere / "by_name").runs.iloc[0]
    assert (row.status, row.backend, row.optimized) == ("ok", "custom", True)

    helped = run("-m", "pipeline", "--help")
    assert "backend: auto, custom, onnxruntime" in helped.stdout, helped.stdout

    auto = run("-m", "pipeline", "profile.enabled=false", "hydra.run.dir=by_auto", *FAST)
    assert auto.returncode == 0, auto.stdout[-3000:] + auto.stderr[-3000:]
    assert "backend: auto -> custom\n" in auto.stdout
    assert results.load(elsewhere / "by_auto").runs.iloc[0].backend == "custom"

    refused = run("-m", "pipeline.reproduce", "by_name")
    assert refused.returncode == 2 and "custom_backend" in refused.stderr
    assert "code from outside this project" in refused.stderr
    allowed = run("-m", "pipeline.reproduce", "by_name", "--allow", "custom_backend", "--out", "again")
    assert allowed.returncode == 0, allowed.stdout[-3000:] + allowed.stderr[-3000:]
    assert results.load(elsewhere / "again").runs.iloc[0].backend == "custom"

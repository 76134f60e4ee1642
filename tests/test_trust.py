"""reproduce runs no code from outside the project unless trusted: decided on what a target resolves to."""

import pytest
import yaml

from pipeline.config.trust import untrusted
from pipeline.run import job
from tests.conftest import run_cli


def test_targets_anywhere_are_checked_and_the_allow_list_works():
    config = {"model": {"_target_": "evil.run"}, "x": [{"_target_": "stages.models.build_builtin"}],
              "y": {"_target_": "pipeline.run.app.SweepSummary"}, "z": {"_target_": "tests.factories:tiny"}}
    assert [f.split(" (")[0] for f in untrusted(config)] == ["model._target_ = 'evil.run'",
                                                            "z._target_ = 'tests.factories:tiny'"]
    assert [f.split(" (")[0] for f in untrusted(config, ("tests.factories",))] == ["model._target_ = 'evil.run'"]
    assert untrusted({"_target_": "stagesX.evil"})  # a prefix of the spelling is not a package


@pytest.mark.parametrize("target", [
    "pipeline.run.app:os.system",      # the colon form: an attribute chain after the module
    "pipeline.run.app.os.system",      # the same as a dotted chain
    "pipeline.run.app:sys.modules",    # a chain that leaves through a module attribute
    "pipeline.run.app.log",            # an object defined elsewhere (a logging.Logger)
    "stages.models:importlib.import_module",
])
def test_a_target_that_resolves_outside_the_project_is_untrusted(target):
    found = untrusted({"model": {"_target_": target}})
    assert len(found) == 1 and target in found[0], found


def test_an_executable_is_untrusted_unless_it_is_the_default_or_allowed(tmp_path):
    script = str(tmp_path / "evil.sh")
    backend = {"plugin": "stages.trtexec"}
    assert untrusted({"backend": {**backend, "path": "trtexec"}}) == []  # a bare name: the user's own PATH
    assert "an executable" in untrusted({"backend": {**backend, "path": script}})[0]
    assert untrusted({"backend": {**backend, "path": script}}, (script,)) == []


def test_a_plugin_or_stage_from_outside_is_untrusted():
    dag = {"b": {"stage": "evil.bench"}, "e": {"stage": "stages.export"}}
    found = untrusted({"backend": {"plugin": "evil", "dag": dag}})
    assert [f.split(" (")[0] for f in found] == ["backend.plugin = 'evil'", "backend.dag.b.stage = 'evil.bench'"]


def _recorded(tmp_path, *overrides):
    """A job directory holding the config composed from `overrides`, as a run records it."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from pipeline.run import app

    with initialize_config_dir(config_dir=app.CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="config", overrides=["backend=onnxruntime", *overrides])
    src = tmp_path / "recorded"
    src.mkdir()
    (src / job.CONFIG_FILE).write_text(yaml.safe_dump(OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)))
    return src


@pytest.mark.slow
def test_reproduce_refuses_a_hidden_os_system_and_runs_nothing(tmp_path):
    marker = tmp_path / "marker"
    src = _recorded(tmp_path, "model=factory", "model._target_=pipeline.run.app:os.system",
                    f"+model.kwargs.command='touch {marker}'")
    refused = run_cli([str(src), "--out", "r1"], tmp_path, module="pipeline.reproduce")
    assert refused.returncode == 2 and "pipeline.run.app:os.system" in refused.stderr
    assert "Traceback" not in refused.stderr and not marker.exists() and not (tmp_path / "r1").exists()
    # the control: trusted, the same config does run the command (so the check above is what stopped it)
    trusted = run_cli([str(src), "--out", "r2", "--trust"], tmp_path, module="pipeline.reproduce")
    assert marker.exists(), trusted.stdout + trusted.stderr


def test_reproduce_refuses_an_executable_path(tmp_path):
    marker = tmp_path / "marker"
    script = tmp_path / "trtexec.sh"
    script.write_text(f"#!/bin/sh\ntouch {marker}\n")
    script.chmod(0o755)
    src = _recorded(tmp_path, "backend=trtexec", f"backend.path={script}")
    refused = run_cli([str(src)], tmp_path, module="pipeline.reproduce")
    assert refused.returncode == 2 and "backend.path" in refused.stderr and not marker.exists()


def test_reproduce_of_a_config_that_is_not_yaml_is_one_line(tmp_path):
    (tmp_path / job.CONFIG_FILE).write_text("model: [unclosed\n  : :\n")
    proc = run_cli([str(tmp_path)], tmp_path, module="pipeline.reproduce")
    assert proc.returncode == 2 and "not valid YAML" in proc.stderr and "Traceback" not in proc.stderr

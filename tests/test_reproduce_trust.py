"""reproduce runs nothing that a recorded config chose unless trusted: trampolines, executable params of any node,
where files go, and a hand-edited record refused in one line (pipeline/config/trust.py, pipeline/run/reproduce.py)."""
import copy
import inspect
import shutil

import pytest
import yaml

from pipeline.config import trust
from pipeline.config.trust import untrusted
from pipeline.run import dag, job, reproduce, runner
from tests.conftest import run_cli


def _config(*overrides) -> dict:
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from pipeline.config import paths, schema

    schema.register()  # the `schema` node conf/config.yaml builds on

    with initialize_config_dir(config_dir=paths.CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="config", overrides=["backend=onnxruntime", *overrides])
    return OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)


def _record(tmp_path, config: dict, name: str = "recorded"):
    src = tmp_path / name
    src.mkdir()
    (src / job.CONFIG_FILE).write_text(yaml.safe_dump(config, sort_keys=False))
    return src


def _reproduce(tmp_path, src, *args):
    return run_cli([str(src), "--out", str(tmp_path / "out"), *args], tmp_path, module="pipeline.reproduce")


def _touch(marker) -> dict:
    return {"target": "os.system", "kwargs": {"command": f"touch {marker}"}}


def _set_validate_data(config: dict, data: dict) -> None:
    """validate.data, and each resolved copy of it: the nodes' feeds (the export checks them) and validation."""
    config["validate"]["data"] = config["feeds"]["data"]["validate"] = copy.deepcopy(data)
    for node in config["backend"]["dag"].values():
        params = node.get("params") or {}
        if "feeds" in params:
            params["feeds"]["data"]["validate"] = copy.deepcopy(data)
        if "validation" in params:
            params["validation"]["data"] = copy.deepcopy(data)


def _refused(proc, *words):
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1
    for word in words:
        assert word in proc.stderr, proc.stderr


# ------------------------------------------------------------------ 1: the project's own functions as trampolines

def test_a_trampoline_and_every_nested_code_name_are_untrusted():
    config = {"model": {"source": "factory", "_target_": "stages.targets.load_factory", "kwargs": _touch("M")},
              "validate": {"data": {"_target_": "stages.targets.load_factory", **_touch("M")}},
              "x": {"_target_": "pipeline.run.isolation.run_isolated", "module_name": "subprocess"},
              "y": {"deep": [{"stage": "stages.load", "plugin": "os"}]}}
    found = [f.split(" (")[0] for f in untrusted(config)]
    assert found == ["model._target_ = 'stages.targets.load_factory'", "model.kwargs.target = 'os.system'",
                     "validate.data._target_ = 'stages.targets.load_factory'", "validate.data.target = 'os.system'",
                     "x._target_ = 'pipeline.run.isolation.run_isolated'", "x.module_name = 'subprocess'",
                     "y.deep[0].stage = 'stages.load'", "y.deep[0].plugin = 'os'"]
    # what the user allows by name is theirs to trust
    assert untrusted({"_target_": "stages.targets.load_factory"}, ("stages.targets.load_factory",)) == []


@pytest.mark.parametrize("target", ["stages.targets.resolve", "stages.load", "pipeline.run.reproduce.main",
                                    "stages.trtexec.build.run", "stages.trtexec.backend.version",
                                    "stages.datasets.batches", "stages.targets:load_factory"])
def test_only_listed_project_callables_are_targets(target):
    assert "may not name" in untrusted({"_target_": target})[0]


def test_the_listed_targets_take_no_name_of_code():
    for name in trust.TARGETS:
        assert trust.target_problem(name) is None, name
        module, _, attr = name.rpartition(".")
        params = set(inspect.signature(getattr(__import__(module, fromlist=[attr]), attr)).parameters)
        assert not params & (trust.CODE_KEYS | {"path", "program", "command", "params", "source", "spec"}), name


@pytest.mark.parametrize("route", ["factory", "export_params", "validate_data", "run_isolated"])
def test_reproduce_refuses_a_trampoline_and_runs_nothing(tmp_path, route):
    marker = tmp_path / "marker"
    config = _config("model=tiny_cnn")
    if route in ("factory", "export_params"):
        model = {**config["model"], "source": "factory", "_target_": "stages.targets.load_factory",
                 "kwargs": _touch(marker)}
        if route == "factory":
            config["model"] = copy.deepcopy(model)
        config["backend"]["dag"]["export"]["params"]["model"] = model
        words = ["stages.targets.load_factory", "os.system"]
    elif route == "validate_data":
        _set_validate_data(config, {"_target_": "stages.targets.load_factory", **_touch(marker)})
        words = ["validate.data._target_", "validate.data.target = 'os.system'"]
    else:
        _set_validate_data(config, {"_target_": "pipeline.run.isolation.run_isolated", "module_name": "subprocess",
                                    "inputs": [shutil.which("sh"), "-c", f"touch {marker}"], "params": -1,
                                    "out_dir": shutil.which("sh"), "timeout_s": 60})
        words = ["pipeline.run.isolation.run_isolated", "module_name = 'subprocess'"]
    src = _record(tmp_path, config)
    _refused(_reproduce(tmp_path, src), *words)
    assert not marker.exists() and not (tmp_path / "out").exists()


@pytest.mark.slow
def test_the_load_factory_route_is_real(tmp_path):
    """The control: trusted, the factory trampoline does run the command (so the refusal above is what stops it)."""
    marker = tmp_path / "marker"
    config = _config("model=tiny_cnn")
    config["model"] = {**config["model"], "source": "factory", "_target_": "stages.targets.load_factory",
                       "kwargs": _touch(marker)}
    config["backend"]["dag"]["export"]["params"]["model"] = config["model"]
    proc = _reproduce(tmp_path, _record(tmp_path, config), "--trust", "--cache-dir", str(tmp_path / "cache"))
    assert marker.exists(), proc.stdout[-2000:] + proc.stderr[-2000:]


# ------------------------------------------------------------------ 2: executable params of every node

def _evil_node(tmp_path, marker) -> tuple[dict, str]:
    script = tmp_path / "evil.sh"
    script.write_text(f"#!/bin/sh\ntouch {marker}\n")
    script.chmod(0o755)
    build = _config("backend=trtexec")["backend"]["dag"]["build"]
    config = _config("model=tiny_cnn")
    evil = {"stage": "stages.trtexec.build", "params": {**build["params"], "path": str(script)}}
    config["backend"]["dag"] = {"evil": evil, **config["backend"]["dag"]}  # first: nothing before it may fail
    return config, str(script)


def test_every_nodes_executable_params_are_checked(tmp_path):
    config, script = _evil_node(tmp_path, tmp_path / "marker")
    found = untrusted(config)
    assert found == [f"backend.dag.evil.params.path = '{script}' (an executable that would be run)"]
    assert untrusted(config, (script,)) == []


def test_reproduce_refuses_an_executable_param_of_any_node_and_runs_not_even_help(tmp_path):
    marker = tmp_path / "marker"
    config, _ = _evil_node(tmp_path, marker)
    _refused(_reproduce(tmp_path, _record(tmp_path, config)), "backend.dag.evil.params.path")
    assert not marker.exists() and not (tmp_path / "out").exists()


# ------------------------------------------------------------------ 3: where files go

def test_a_node_name_that_is_not_an_identifier_is_one_line():
    export = _config()["backend"]["dag"]["export"]
    with pytest.raises(dag.DagError, match=r"^backend\.dag: node name '\.\./\.\./escaped_node' is not a plain"):
        runner.plan({"../../escaped_node": export})


def test_reproduce_refuses_a_node_that_would_write_outside_out(tmp_path):
    config = _config("model=tiny_cnn")
    nodes = config["backend"]["dag"]
    nodes["../../escaped_node"] = nodes.pop("benchmark")  # a measurement: writes <out>/stages/<node>
    proc = _reproduce(tmp_path, _record(tmp_path, config), "--cache-dir", str(tmp_path / "cache"))
    _refused(proc, "'../../escaped_node'", "plain identifier")
    assert not (tmp_path / "escaped_node").exists() and not (tmp_path / "out").exists()


@pytest.mark.slow
def test_reproduce_uses_the_callers_cache_not_the_recorded_one(tmp_path):
    config = _config("model=tiny_cnn")
    config["backend"]["dag"] = {"export": config["backend"]["dag"]["export"]}  # one quick node is enough
    config["cache"]["dir"] = str(tmp_path / "recorded_cache")
    src = _record(tmp_path, config)
    proc = _reproduce(tmp_path, src, "--cache-dir", "mine")
    assert not (tmp_path / "recorded_cache").exists(), proc.stdout[-2000:] + proc.stderr[-2000:]
    assert (tmp_path / "mine").is_dir()
    assert yaml.safe_load((tmp_path / "out" / job.CONFIG_FILE).read_text())["cache"]["dir"] == "mine"
    # without the flag: the CLI's default cache, under the caller's working directory
    run_cli([str(src), "--out", "out2"], tmp_path, module="pipeline.reproduce")
    assert not (tmp_path / "recorded_cache").exists() and (tmp_path / "outputs" / "cache").is_dir()


# ------------------------------------------------------------------ 11: a hand-edited record

@pytest.mark.parametrize("edit, words", [
    (lambda c: c.update(batch_size="eight"), ["batch_size = 'eight'", "expected an integer"]),
    (lambda c: c.pop("benchmark"), ["benchmark is missing"]),
    (lambda c: c["backend"].update(optimization_level="3"), ["backend.optimization_level = '3'", "expected int"]),
    (lambda c: c["benchmark"].update(min_iterations=-4), ["benchmark.min_iterations = -4", "valid: >= 1"]),
])
def test_reproduce_of_a_hand_edited_record_is_one_line_naming_the_key(tmp_path, edit, words):
    config = _config()
    edit(config)
    _refused(_reproduce(tmp_path, _record(tmp_path, config)), *words)
    assert not (tmp_path / "out").exists()


def test_a_failed_reproduction_says_why():
    report = {"source": "a", "new": "b", "out": "o", "status": {"original": "ok", "new": "failed"},
              "error": "benchmark: it broke", "config_hash_same": True, "cache": {}, "environment_diff": {},
              "metrics": {}}
    assert "  error: benchmark: it broke" in reproduce.render(report).splitlines()


def test_a_record_from_before_a_key_existed_gets_its_default_but_a_missing_section_is_refused():
    from pipeline.config import schema

    config = _config()
    del config["select"]["max_relative_error"]
    schema.check_types(config)
    assert config["select"]["max_relative_error"] == schema.SelectConfig.max_relative_error
    del config["precision"]["name"]
    with pytest.raises(schema.ConfigError, match=r"^precision\.name is missing and has no default"):
        schema.check_types(config)

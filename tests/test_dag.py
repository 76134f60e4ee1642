from types import SimpleNamespace

import pytest

from pipeline.config.schema import ConfigError
from pipeline.run import dag, runner
from stages.api import Param

OUTPUTS = {"export": ("onnx",), "convert": ("onnx",), "build": ("model",), "bench": ()}


def load(stage):
    if stage not in OUTPUTS:
        raise ValueError("cannot import it (ModuleNotFoundError)")
    return SimpleNamespace(OUTPUTS=OUTPUTS[stage], PARAMS={"level": Param(int)} if stage == "build" else {})


def order(spec):
    return [n.name for n in dag.order(dag.parse(spec), load)]


def test_orders_nodes_so_inputs_come_first():
    spec = {
        "bench": {"stage": "bench", "inputs": {"model": "build.model"}},
        "build": {"stage": "build", "inputs": {"onnx": "convert.onnx"}, "params": {"level": 3}},
        "convert": {"stage": "convert", "inputs": {"onnx": "export.onnx"}},
        "export": {"stage": "export"},
    }
    assert order(spec) == ["export", "convert", "build", "bench"]


@pytest.mark.parametrize("spec, words", [
    ({"a": {"stage": "nope"}}, ["backend.dag.a.stage", "'nope'", "cannot import"]),
    ({"a": {"stage": "build", "params": {"levle": 1}}}, ["backend.dag.a.params.levle", "valid: level"]),
    ({"a": {"stage": "build", "params": {}}}, ["backend.dag.a.params.level", "missing"]),
    ({"a": {"stage": "build", "params": {"level": "3"}}}, ["backend.dag.a.params.level = '3'", "expected int"]),
    ({"a": {"stage": "convert", "inputs": {"onnx": "ghost.onnx"}}}, ["backend.dag.a.inputs.onnx", "no node 'ghost'"]),
    ({"e": {"stage": "export"}, "a": {"stage": "convert", "inputs": {"onnx": "e.model"}}},
     ["backend.dag.a.inputs.onnx", "has no output 'model'", "it has: onnx"]),
    ({"a": {"stage": "convert", "inputs": {"onnx": "justaname"}}}, ["expected '<node>.<output>'"]),
    ({"a": {"inputs": {}}}, ["backend.dag.a", "needs `stage:`"]),
    ({}, ["backend.dag is empty"]),
])
def test_invalid_graphs_name_the_node(spec, words):
    with pytest.raises(ConfigError) as err:
        order(spec)
    for word in words:
        assert word in str(err.value)


def test_cycle_is_reported_with_its_nodes():
    spec = {"a": {"stage": "convert", "inputs": {"onnx": "b.onnx"}},
            "b": {"stage": "convert", "inputs": {"onnx": "a.onnx"}}}
    with pytest.raises(ConfigError, match="cycle") as err:
        order(spec)
    assert "a" in str(err.value) and "b" in str(err.value)


ORT = {"name": "onnxruntime", "plugin": "stages.onnxruntime", "optimization_level": 3, "intra_op_threads": 0,
       "inter_op_threads": 0, "execution_mode": "sequential"}


def test_plan_checks_real_stages_and_their_params():
    export = {"stage": "stages.export", "params": {"model": {}, "seed": 0, "opset": 18, "feeds": {}}}
    nodes = runner.plan({"export": export})
    assert [n.name for n in nodes] == ["export"]
    with pytest.raises(ConfigError, match="has no output 'engine'"):
        runner.plan({"export": export, "build": {"stage": "stages.onnxruntime.build",
                                                 "inputs": {"onnx": "export.engine"},
                                                 "params": {"precision": "fp32", "tf32": False}}}, ORT)
    with pytest.raises(ConfigError, match=r"backend.dag.export.params.opset = 7: out of range; valid: >= 13"):
        runner.plan({"export": {**export, "params": {**export["params"], "opset": 7}}})
    with pytest.raises(ConfigError, match="is not a stage"):
        runner.plan({"x": {"stage": "stages.inputs"}})


def test_disabled_nodes_are_skipped_and_cannot_feed_others():
    spec = {"export": {"stage": "export"},
            "convert": {"stage": "convert", "inputs": {"onnx": "export.onnx"}, "enabled": False}}
    nodes = dag.order(dag.parse(spec), load)
    assert [n.name for n in nodes if n.enabled] == ["export"]
    spec["build"] = {"stage": "build", "inputs": {"onnx": "convert.onnx"}, "params": {"level": 3}}
    with pytest.raises(ConfigError, match="node 'convert' is disabled"):
        dag.order(dag.parse(spec), load)

import pytest

from pipeline import dag, runner
from pipeline.schema import ConfigError

OUTPUTS = {"export": ("onnx",), "convert": ("onnx",), "build": ("model",), "bench": ()}


def order(spec):
    return [n.name for n in dag.order(dag.parse(spec), OUTPUTS, lambda s: OUTPUTS[s])]


def test_orders_nodes_so_inputs_come_first():
    spec = {
        "bench": {"stage": "bench", "inputs": {"model": "build.model"}},
        "build": {"stage": "build", "inputs": {"onnx": "convert.onnx"}},
        "convert": {"stage": "convert", "inputs": {"onnx": "export.onnx"}},
        "export": {"stage": "export"},
    }
    assert order(spec) == ["export", "convert", "build", "bench"]


@pytest.mark.parametrize("spec, words", [
    ({"a": {"stage": "nope"}}, ["backend.dag.a.stage", "'nope'", "known stages", "export"]),
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


def test_plan_uses_the_real_stage_registry():
    nodes = runner.plan({"export": {"stage": "export"},
                         "convert": {"stage": "convert", "inputs": {"onnx": "export.onnx"}}})
    assert [n.name for n in nodes] == ["export", "convert"]
    with pytest.raises(ConfigError, match="has no output 'engine'"):
        runner.plan({"export": {"stage": "export"},
                     "convert": {"stage": "convert", "inputs": {"onnx": "export.engine"}}})


def test_disabled_nodes_are_skipped_and_cannot_feed_others():
    spec = {"export": {"stage": "export"},
            "convert": {"stage": "convert", "inputs": {"onnx": "export.onnx"}, "enabled": False}}
    assert [n.name for n in runner.plan(spec)] == ["export"]
    spec["build"] = {"stage": "build_onnxruntime", "inputs": {"onnx": "convert.onnx"}}
    with pytest.raises(ConfigError, match="node 'convert' is disabled"):
        runner.plan(spec)

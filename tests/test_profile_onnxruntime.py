"""The ONNX Runtime profile stage: ORT's trace aggregated per node, on a tiny graph built by the real build stage.
(End to end through the CLI, into the `layers` table, it is checked by tests/test_report.py.)"""
from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline import results
from pipeline.run import runner
from stages.onnxruntime import build, profile

BUILD = {"precision": "fp32", "tf32": False, "optimization_level": 3,
         "intra_op_threads": 1, "inter_op_threads": 1, "execution_mode": "sequential", "provider": "cpu"}
PROFILE = {"feeds": {"batch_size": 2, "axes": {}, "inputs": {}, "input_shape": None}, "seed": 0, "iterations": 4}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Conv -> Relu -> GlobalAveragePool -> Flatten -> Gemm, dynamic batch, through the build stage."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal(s).astype(np.float32), n)
             for n, s in (("w", (8, 3, 3, 3)), ("b", (8,)), ("fc", (8, 5)), ("fc_b", (5,)))]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("GlobalAveragePool", ["r"], ["p"], name="pool"),
             helper.make_node("Flatten", ["p"], ["f"], name="flatten"),
             helper.make_node("Gemm", ["f", "fc", "fc_b"], ["y"], name="fc")]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    root = tmp_path_factory.mktemp("profile")
    onnx.save(model, root / "tiny.onnx")
    (root / "build").mkdir()
    result = build.run({"onnx": root / "tiny.onnx"}, BUILD, root / "build")
    return root / "build" / result.outputs["model"], root / "tiny.onnx"


def test_rows_per_node_with_shares(built, tmp_path):
    model, reference = built
    rows, info = profile.layers(model, reference, PROFILE["feeds"], PROFILE["seed"], PROFILE["iterations"], tmp_path)
    assert rows, "no layer rows"
    assert sum(r["share"] for r in rows) == pytest.approx(1.0)
    assert all(r["time_ms"] > 0 and r["source"] == "onnxruntime-profiler" and r["stream"] == 0 for r in rows)
    assert all(r["tactic"] == "CPUExecutionProvider" and r["dtype"] == "float" for r in rows)
    assert len({r["layer"] for r in rows}) == len(rows)  # one row per node
    assert {"Conv", "GlobalAveragePool", "Gemm"} <= {r["layer_type"] for r in rows}  # as ORT optimized the graph
    # the raw trace stays beside the job's stage outputs; ORT's own timestamped file is gone
    assert info == {"iterations": 4, "layers": len(rows), "trace": profile.TRACE_FILE}
    assert [p.name for p in tmp_path.iterdir()] == [profile.TRACE_FILE]
    json.loads((tmp_path / profile.TRACE_FILE).read_text())
    # they fit the fixed `layers` schema
    results.write_tables(tmp_path / "job", {"runs": [{"run_id": "r", "status": "ok"}],
                                            "layers": [{"run_id": "r", **r} for r in rows]})
    loaded = results.load(tmp_path / "job").layers
    assert len(loaded) == len(rows) and loaded["share"].sum() == pytest.approx(1.0)



def _kernel(name, ts, dur, op="Conv", out=({"float": [1, 8]},)):
    return {"cat": "Node", "name": f"{name}_kernel_time", "ts": ts, "dur": dur,
            "args": {"op_name": op, "provider": "CPUExecutionProvider", "output_type_shape": list(out)}}


def _run(ts, dur):
    return {"cat": "Session", "name": "model_run", "ts": ts, "dur": dur}


def test_layer_rows_skips_warmup_and_averages():
    events = [_run(0, 100), _kernel("a", 10, 90),                                  # warm-up: left out
              _run(200, 100), _kernel("a", 210, 30), _kernel("b", 250, 10, "Gemm", ({"float16": [1]}, {"int64": [1]})),
              {"cat": "Node", "name": "a_fence_before", "ts": 209, "dur": 1},    # not a kernel event
              _run(400, 100), _kernel("a", 410, 50), _kernel("b", 470, 10, "Gemm")]
    rows = profile.layer_rows(events, iterations=2, skip_runs=1)
    assert [r["layer"] for r in rows] == ["a", "b"]
    a, b = rows
    assert a["time_ms"] == pytest.approx(0.040) and b["time_ms"] == pytest.approx(0.010)
    assert a["share"] == pytest.approx(0.8) and b["share"] == pytest.approx(0.2)
    assert (a["layer_type"], b["layer_type"]) == ("Conv", "Gemm")
    assert b["dtype"] == "float16,int64"  # the first counted event describes the node, all its outputs


def test_profile_runs_after_the_benchmark(base_config):
    order = [node.name for node in runner.plan(base_config["backend"]["dag"], base_config["backend"])]
    assert order.index("profile") > order.index("benchmark")

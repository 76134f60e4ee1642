"""ModelOpt runs the model while converting it (AutoCast checks value ranges, quantization calibrates): it must see
the run's shapes, not its own guesses. A detector-like graph with dynamic height and width (a stride-2 branch
upsampled and concatenated with its input, as YOLO's necks do) breaks at ModelOpt's default of 1 for every
dynamic dim, and an MLP whose batch ModelOpt takes as 1 looks like matrix-vector products it never quantizes."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from pipeline import results
from tests.conftest import FAST, run_cli

pytestmark = pytest.mark.slow


def neck_onnx(path):
    """x [batch, 3, height, width] -> concat(x, upsample(conv_stride2(x))) [batch, 7, height, width]."""
    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    scales = numpy_helper.from_array(np.array([1, 1, 2, 2], dtype=np.float32), "scales")
    nodes = [helper.make_node("Conv", ["x", "w"], ["down"], strides=[2, 2], pads=[1, 1, 1, 1]),
             helper.make_node("Resize", ["down", "", "scales"], ["up"], mode="nearest"),
             helper.make_node("Concat", ["x", "up"], ["y"], axis=1)]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, "height", "width"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 7, "height", "width"])
    graph = helper.make_graph(nodes, "neck", [x], [y], [weight, scales])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def test_fp16_autocast_of_a_graph_with_dynamic_height_and_width_runs_at_the_runs_sizes(workdir):
    neck_onnx(workdir / "neck.onnx")
    proc = run_cli(["model=onnx", "model.path=neck.onnx", "axes.height=32", "axes.width=32", "precision=fp16",
                    "batch_size=2", *FAST], workdir)
    row = results.load(workdir / "outputs").runs.iloc[0]
    assert proc.returncode == 0 and row.status == "ok", row.error
    assert row.convert_mode == "autocast"


def mlp_onnx(path, features=30, hidden=64):
    """A small Gemm-headed classifier with a dynamic batch, as sklearn-style tabular models are exported."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((features, hidden)).astype(np.float32), "w1"),
             numpy_helper.from_array(np.zeros(hidden, np.float32), "b1"),
             numpy_helper.from_array(rng.standard_normal((hidden, 2)).astype(np.float32), "w2"),
             numpy_helper.from_array(np.zeros(2, np.float32), "b2")]
    nodes = [helper.make_node("Gemm", ["x", "w1", "b1"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("Gemm", ["r", "w2", "b2"], ["y"])]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", features])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2])
    onnx.save(helper.make_model(helper.make_graph(nodes, "mlp", [x], [y], inits),
                                opset_imports=[helper.make_opsetid("", 17)]), str(path))


def test_int8_quantizes_a_gemm_headed_model_at_the_runs_batch_and_says_which_rule_leaves_it_at_batch_1(workdir):
    mlp_onnx(workdir / "mlp.onnx")
    base = ["model=onnx", "model.path=mlp.onnx", "precision=int8", *FAST]
    proc = run_cli([*base, "batch_size=32", "hydra.run.dir=b32"], workdir)
    row = results.load(workdir / "b32").runs.iloc[0]
    assert proc.returncode == 0 and row.status == "ok", row.error
    assert row.convert_quantize_nodes > 0
    run_cli([*base, "batch_size=1", "hydra.run.dir=b1"], workdir)  # its own conversion, not batch 32's
    row = results.load(workdir / "b1").runs.iloc[0]
    assert row.status == "unsupported", row.error
    for words in ("matrix-vector product: here batch_size=1", "K or N is below 16", "A larger batch_size"):
        assert words in row.error, row.error

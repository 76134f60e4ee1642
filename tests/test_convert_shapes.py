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

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
    assert "[ERROR]" not in proc.stdout + proc.stderr  # ModelOpt's "Failed to get GPU count" on a CPU machine
    run_cli([*base, "batch_size=1", "hydra.run.dir=b1"], workdir)  # its own conversion, not batch 32's
    row = results.load(workdir / "b1").runs.iloc[0]
    assert row.status == "unsupported", row.error
    for words in ("matrix-vector product: here batch_size=1", "K or N is below 16", "A larger batch_size"):
        assert words in row.error, row.error


def sklearn_onnx(path, model: str, zipmap: bool = False):
    """A scikit-learn classifier trained on the breast-cancer data (it ships with scikit-learn), exported by
    skl2onnx as users export them: a batch dim with neither a size nor a name."""
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier

    x, y = load_breast_cancer(return_X_y=True)
    x = ((x - x.mean(0)) / x.std(0)).astype(np.float32)
    est = (MLPClassifier(hidden_layer_sizes=(32,), max_iter=300, random_state=0) if model == "mlp"
           else LogisticRegression(max_iter=300))
    est.fit(x, y)
    proto = to_onnx(est, initial_types=[("input", FloatTensorType([None, 30]))],
                    options={id(est): {"zipmap": zipmap}})
    path.write_bytes(proto.SerializeToString())


def test_real_scikit_learn_exports_give_one_line_each(workdir):
    pytest.importorskip("skl2onnx")
    sklearn_onnx(workdir / "mlp.onnx", "mlp")
    sklearn_onnx(workdir / "lr.onnx", "logistic")
    sklearn_onnx(workdir / "zipmap.onnx", "logistic", zipmap=True)
    cases = {  # the unnamed batch dim: named for ModelOpt, so the MLP quantizes
             "mlp_int8": (["model.path=mlp.onnx", "precision=int8"], "ok", None),
             "lr_fp32": (["model.path=lr.onnx"], "ok", None),
             "lr_int8": (["model.path=lr.onnx", "precision=int8"], "unsupported",
                         "operators outside standard ONNX, ai.onnx.ml: LinearClassifier"),
             "zipmap": (["model.path=zipmap.onnx"], "failed", "output 'output_probability' is a sequence")}
    for name, (args, status, words) in cases.items():
        proc = run_cli(["model=onnx", *args, "batch_size=32", f"hydra.run.dir={name}", *FAST], workdir)
        row = results.load(workdir / name).runs.iloc[0]
        assert row.status == status and "Traceback" not in proc.stdout + proc.stderr, (name, row.error)
        assert words is None or words in row.error, (name, row.error)


def test_a_modelopt_failure_on_a_graph_with_other_domains_names_them(tmp_path, monkeypatch):
    """ModelOpt's own error on such a graph ("Cannot restore public graph output metadata ...", seen with a
    ZipMap) says nothing of why: the row names the operators it does not convert."""
    pytest.importorskip("skl2onnx")
    from stages import convert
    from stages.api import Unsupported

    sklearn_onnx(tmp_path / "lr.onnx", "logistic", zipmap=True)

    def modelopt_fails(*args):
        raise RuntimeError("Cannot restore public graph output metadata for output_probability")

    monkeypatch.setattr(convert, "_quantize", modelopt_fails)
    params = {"precision": {"name": "int8", "convert": "quantize"}}
    with pytest.raises(Unsupported, match=r"ModelOpt failed on this graph \(RuntimeError: Cannot restore.*\); it "
                                          r"holds operators outside standard ONNX \(ai.onnx.ml: LinearClassifier, "
                                          r"ZipMap\)"):
        convert.run({"onnx": tmp_path / "lr.onnx"}, params, tmp_path)

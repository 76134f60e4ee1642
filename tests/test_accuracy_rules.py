"""The accuracy path on outputs beyond a (batch, classes) float (stages/accuracy.py): a quantized classifier that keeps
a small relative error but flips decisions, a real ONNX classifier whose first output is its int64 label, a
regression model on scikit-learn's diabetes data with float labels, and a user metric that cannot be computed."""
from __future__ import annotations

import numpy as np
import pytest

from pipeline.analysis import select
from stages import accuracy
from stages.api import StageInputError


class Torch:
    """A runner around a torch module (float32 in, numpy out)."""
    on_gpu = False

    def __init__(self, module, output="logits"):
        self.module, self.output = module, output

    def infer(self, feeds):
        import torch

        with torch.no_grad():
            return {self.output: self.module(torch.from_numpy(feeds["input"])).numpy()}


class Onnx:
    """A runner around an onnxruntime session of a model nobody here wrote (skl2onnx's conversion)."""
    on_gpu = False

    def __init__(self, model):
        import onnxruntime

        self.session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name

    def infer(self, feeds):
        names = [o.name for o in self.session.get_outputs()]
        return dict(zip(names, self.session.run(None, {self.input: feeds["input"]})))


def batches(x: np.ndarray, labels: np.ndarray | None, size: int = 32):
    for start in range(0, len(x), size):
        rows = min(size, len(x) - start)
        yield {"input": x[start:start + rows]}, None if labels is None else labels[start:start + rows], rows


def test_int8_weights_on_near_tied_logits_keep_a_small_error_but_flip_decisions():
    """Two classes whose scores differ by far less than their size: int8 weight quantization (torch's per-tensor
    fake quantizer) moves each score by a little, which is a small relative error, and flips the many
    decisions that hinge on that difference. The unlabelled rule must refuse it by its agreement."""
    import torch

    torch.manual_seed(0)
    reference = torch.nn.Linear(16, 2)
    with torch.no_grad():
        reference.weight[1] = reference.weight[0] + 1e-3 * torch.randn(16)  # near-tied logits
        reference.bias[1] = reference.bias[0]
    quantized = torch.nn.Linear(16, 2)
    with torch.no_grad():
        scale = float(reference.weight.abs().max()) / 127
        quantized.weight.copy_(torch.fake_quantize_per_tensor_affine(reference.weight, scale, 0, -128, 127))
        quantized.bias.copy_(reference.bias)
    x = np.random.default_rng(0).standard_normal((512, 16)).astype(np.float32) + 3.0  # scores far from zero
    rows, info, predictions = accuracy.evaluate(Torch(quantized), Torch(reference), batches(x, None), "fp32")
    metrics = {r["metric"]: r["value"] for r in rows}
    assert metrics["rel_l2_err"] < 0.05 and metrics["top1_agreement"] < 0.9, metrics
    assert predictions["agree"].mean() == pytest.approx(metrics["top1_agreement"])  # one row per sample
    point = select.judge("r", "ok", {("latency", "median"): (0.1, "ms")}, rows, 1000, select.Rule())
    assert not point.feasible and "< select.min_top1_agreement=0.99" in point.why
    assert "rel_l2_err" not in point.why  # the error bound passed: the agreement decided


def test_an_onnx_classifier_is_judged_on_its_probabilities_not_its_int64_label():
    from skl2onnx import to_onnx
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    x, y = load_iris(return_X_y=True)
    x = x.astype(np.float32)
    model = to_onnx(LogisticRegression(max_iter=500).fit(x, y), x[:1], options={"zipmap": False})
    runner = Onnx(model)
    assert list(runner.infer({"input": x[:2]})) == ["label", "probabilities"]  # the int64 label comes first
    rows, info, predictions = accuracy.evaluate(runner, Onnx(model), batches(x, y), "fp32")
    assert rows[0]["output"] == "probabilities" and info["output"] == "probabilities"
    metrics = {r["metric"]: r["value"] for r in rows if r["output"] == "probabilities"}
    assert metrics["top1_accuracy"] > 0.9 and metrics["top1_agreement"] == 1.0
    assert "top1_agreement" not in {r["metric"] for r in rows if r["output"] == "label"}  # a label is not scores
    assert set(predictions["output"]) == {"probabilities"} and predictions["run_correct"].sum() == round(
        metrics["top1_accuracy"] * len(y))


def diabetes():
    import torch
    from sklearn.datasets import load_diabetes
    from sklearn.linear_model import LinearRegression

    x, y = load_diabetes(return_X_y=True)
    x, y = x.astype(np.float32), y.astype(np.float32)
    fit = LinearRegression().fit(x, y)
    reference = torch.nn.Linear(10, 1)
    with torch.no_grad():
        reference.weight.copy_(torch.from_numpy(fit.coef_[None].astype(np.float32)))
        reference.bias.fill_(float(fit.intercept_))
    return x, y, reference


def test_a_regression_model_gets_mae_rmse_and_r2_as_scikit_learn_computes_them():
    import torch
    from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

    x, y, reference = diabetes()
    half = torch.nn.Linear(10, 1)
    half.load_state_dict(reference.state_dict())
    half.half()
    candidate = torch.nn.Sequential(half).float()  # a copy whose weights went through fp16
    metric = {"_target_": "sklearn.metrics.mean_absolute_error", "higher_is_better": False}
    rows, info, predictions = accuracy.evaluate(Torch(candidate, "y"), Torch(reference, "y"), batches(x, y),
                                                "fp32", metric)
    m = {r["metric"]: r["value"] for r in rows}
    with torch.no_grad():
        want = reference(torch.from_numpy(x)).numpy()[:, 0]
        got = candidate(torch.from_numpy(x)).numpy()[:, 0]
    assert m["r2_reference"] == pytest.approx(r2_score(y, want), rel=1e-6)
    assert m["r2"] == pytest.approx(r2_score(y, got), rel=1e-6)
    assert m["mae"] == pytest.approx(mean_absolute_error(y, got), rel=1e-6)
    assert m["rmse"] == pytest.approx(np.sqrt(mean_squared_error(y, got)), rel=1e-6)
    assert m["r2_drop"] == pytest.approx(m["r2_reference"] - m["r2"])
    # the user's metric, lower is better: its drop is run minus reference
    assert m["mean_absolute_error"] == pytest.approx(m["mae"], rel=1e-6)
    assert m["mean_absolute_error_drop"] == pytest.approx(m["mae"] - m["mae_reference"], rel=0.05)
    assert info["r2"] == m["r2"] and {r["samples"] for r in rows} == {len(y)}
    assert predictions["run_error"].dtype == np.float32 and len(predictions["run_error"]) == len(y)
    assert predictions["run_error"].mean() == pytest.approx(m["mae"], rel=1e-5)


def test_a_user_metric_that_cannot_be_computed_is_an_error_naming_it():
    x, y, reference = diabetes()
    # class indices for a regression output: the labels fit no output, so the metric has nothing to judge
    with pytest.raises(StageInputError, match=r"validate.metric = \{_target_: sklearn.metrics.accuracy_score\} "
                                              r"cannot be computed: the labels fit no output"):
        accuracy.evaluate(Torch(reference), Torch(reference), batches(x, np.zeros(len(x), dtype=np.int64)), "fp32",
                          {"_target_": "sklearn.metrics.accuracy_score"})
    # a metric that raises on what it is given: continuous predictions to a classification metric
    with pytest.raises(StageInputError, match=r"accuracy_score\} cannot be computed: it raised ValueError"):
        accuracy.evaluate(Torch(reference), Torch(reference), batches(x, y), "fp32",
                          {"_target_": "sklearn.metrics.accuracy_score"})
    with pytest.raises(StageInputError, match="it needs labelled data"):
        accuracy.evaluate(Torch(reference), Torch(reference), batches(x, None), "fp32",
                          {"_target_": "sklearn.metrics.r2_score"})


@pytest.mark.slow  # the real CLI
def test_a_regression_sweep_is_validated_and_selected_on_its_task_metric(tmp_path):
    """scikit-learn's diabetes regression, converted by skl2onnx, swept fp32/fp16 with float labels and the user's
    metric: every point gets mae, rmse, r2 and the metric with its drop; selection bounds r2's drop."""
    import json

    from skl2onnx import to_onnx
    from sklearn.datasets import load_diabetes
    from sklearn.linear_model import LinearRegression
    from sklearn.metrics import r2_score

    from pipeline import results
    from tests.conftest import FAST, run_cli

    x, y = load_diabetes(return_X_y=True)
    x, y = x.astype(np.float32), y.astype(np.float32)
    fit = LinearRegression().fit(x[:300], y[:300])
    (tmp_path / "diabetes.onnx").write_bytes(to_onnx(fit, x[:1]).SerializeToString())
    np.savez(tmp_path / "val.npz", X=x[300:], labels=y[300:])
    proc = run_cli(["-m", "model=onnx", "model.path=diabetes.onnx", "precision=fp32,fp16", "backend=onnxruntime",
                    "validate.data=val.npz", "batch_size=16", "report.enabled=false",
                    "validate.metric={_target_:sklearn.metrics.mean_absolute_error,higher_is_better:false}",
                    "hydra.sweep.dir=s", *FAST], tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    loaded = results.load(tmp_path / "s")
    fp32 = loaded.runs.set_index("precision").loc["fp32", "run_id"]
    acc = loaded.accuracy[loaded.accuracy.run_id == fp32].set_index("metric")
    assert acc.loc["r2_reference", "value"] == pytest.approx(r2_score(y[300:], fit.predict(x[300:])), rel=1e-4)
    assert acc.loc["mean_absolute_error", "samples"] == len(y) - 300
    assert {"mae_drop", "rmse_drop", "r2_drop", "mean_absolute_error_drop"} <= set(acc.index)
    best = next(line for line in proc.stdout.splitlines() if line.startswith("best"))
    assert " r2 drop " in best and "max 0.01" in best, best
    header = next(line for line in proc.stdout.splitlines() if line.lstrip().startswith("job")).split()
    assert {"r2", "r2_drop", "mean_absolute_error", "mean_absolute_error_drop", "samples", "p99_ms"} <= set(header)
    recorded = json.loads((tmp_path / "s" / "selection.json").read_text())
    assert {p["accuracy_kind"] for p in recorded["points"].values()} == {"task/r2"}
    assert len(loaded.predictions) == 2 * (len(y) - 300) and loaded.predictions["run_error"].notna().all()


@pytest.mark.parametrize("name, shape, dtype, scores", [
    ("logits", (2, 10), np.float32, True),          # (batch, classes)
    ("output", (2, 10), np.float16, True),
    ("logits", (2, 5, 100), np.float32, True),      # per-token logits, by name
    ("last_hidden_state", (2, 5, 64), np.float32, False),  # per-token features are not scores
    ("label", (2, 3), np.int64, False),             # integers never are
    ("y", (2, 1), np.float32, False),               # one value: a regression output
])
def test_which_outputs_are_class_scores(name, shape, dtype, scores):
    assert accuracy.is_scores(name, np.zeros(shape, dtype=dtype)) is scores

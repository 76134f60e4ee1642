"""Accuracy you can ship on: real data for validation (.npz or a loader), task metrics with labels, the trained
default model's real top-1 per precision, and data that does not fit the model refused before any work."""
import numpy as np
import pytest

from pipeline import results
from tests.conftest import FAST, run_cli

pytestmark = pytest.mark.slow


def metrics_of(loaded, run_id=None) -> dict:
    acc = loaded.accuracy if run_id is None else loaded.accuracy[loaded.accuracy.run_id == run_id]
    return dict(zip(acc.metric, acc.value))


def test_an_npz_with_labels_gives_top1_over_every_sample(workdir):
    rng = np.random.default_rng(0)
    np.savez(workdir / "val.npz", input=rng.standard_normal((37, 3, 32, 32), dtype=np.float32),
             labels=rng.integers(0, 100, 37))
    proc = run_cli(["model=tiny_cnn", "validate.data=val.npz", "batch_size=8", *FAST], workdir)
    assert proc.returncode == 0, proc.stdout[-3000:]
    loaded = results.load(workdir / "outputs")
    acc = loaded.accuracy
    assert set(acc.samples) == {37}  # every sample once: the padded last batch counts its 5 real rows
    m = metrics_of(loaded)
    assert {"top1_accuracy", "top1_accuracy_reference", "top1_accuracy_drop", "top5_accuracy"} <= set(m)
    assert m["top1_accuracy"] == m["top1_accuracy_reference"] and m["top1_accuracy_drop"] == 0  # fp32 vs fp32
    assert "on 37 labelled samples" in proc.stdout


def test_a_loader_and_a_user_metric(workdir):
    proc = run_cli(["model=tiny_cnn", "validate.data={_target_:tests.factories.labelled_batches,n:40}",
                    "validate.metric={_target_:tests.factories.agreement}",
                    "validate.max_samples=30", "batch_size=4", *FAST], workdir)
    assert proc.returncode == 0, proc.stdout[-3000:]
    loaded = results.load(workdir / "outputs")
    m = metrics_of(loaded)
    assert set(loaded.accuracy.samples) == {30}  # validate.max_samples
    assert m["agreement"] == pytest.approx(m["top1_accuracy"]) and "agreement_reference" in m


@pytest.mark.parametrize("arrays, words", [
    ({"image": (8, 3, 32, 32)}, ["validate.data = 'bad.npz'", "has arrays ['image', 'labels']", "needs ['input']"]),
    ({"input": (8, 3, 16, 16)}, ["validate.data = 'bad.npz': array 'input' has shape (8, 3, 16, 16)",
                                 "needs (batch, 3, 32, 32)"]),
])
def test_data_that_does_not_fit_the_model_fails_before_any_work(workdir, arrays, words):
    np.savez(workdir / "bad.npz", labels=np.zeros(8, dtype=np.int64),
             **{k: np.zeros(s, dtype=np.float32) for k, s in arrays.items()})
    proc = run_cli(["model=tiny_cnn", "validate.data=bad.npz", *FAST], workdir)
    row = results.load(workdir / "outputs").runs.iloc[0]
    assert proc.returncode == 1 and row.status == "failed" and "Traceback" not in proc.stdout
    assert "export_seconds" not in row or row.export_seconds != row.export_seconds  # the export never finished
    for word in words:
        assert word in row.error, row.error


@pytest.mark.parametrize("backend", ["onnxruntime", "torch"])
def test_data_that_does_not_fit_fails_before_any_work_on_a_warm_cache_too(workdir, backend):
    """The data is not in the model's cache key: a hit must still check it, before the build and the benchmark."""
    common = ["model=tiny_cnn", f"backend={backend}", "backend.device=cpu" if backend == "torch" else "seed=0",
              *FAST]
    assert run_cli([*common, "hydra.run.dir=warm"], workdir).returncode == 0
    np.savez(workdir / "bad.npz", image=np.zeros((8, 3, 32, 32), dtype=np.float32))
    proc = run_cli([*common, "validate.data=bad.npz", "hydra.run.dir=bad"], workdir)
    row = results.load(workdir / "bad").runs.iloc[0]
    assert proc.returncode == 1 and row.status == "failed" and "needs ['input']" in row.error, row.error
    first = "export" if backend == "onnxruntime" else "model"
    assert row.error.startswith(f"{first}: ") and "benchmark_seconds" not in row  # stopped at the hit


def test_the_trained_default_reports_real_top1_per_precision(workdir):
    proc = run_cli(["-m", "precision=fp32,int8", "hydra.sweep.dir=s", *FAST], workdir)
    assert proc.returncode == 0, proc.stdout[-3000:]
    loaded = results.load(workdir / "s")
    runs = loaded.runs.set_index("precision")
    assert set(runs.model) == {"digits"} and set(runs.status) == {"ok"}
    assert runs.loc["int8", "convert_calibration_source"] == "stages.datasets.digits"  # calibrated on real images
    for precision in ("fp32", "int8"):
        m = metrics_of(loaded, runs.loc[precision, "run_id"])
        assert m["top1_accuracy"] > 0.9  # well above the 0.1 of chance, on the 359 held-out digits
    assert set(loaded.accuracy.samples) == {359}
    assert "best: " in proc.stdout and runs["selected"].sum() == 1


@pytest.mark.parametrize("value, words", [
    ("{_target_:tests.factories.agreement}", "validate.metric is set but validate.data is not"),
    ("agreement", "validate.metric = 'agreement': expected {_target_: package.module.function, ...}"),
])
def test_a_metric_without_labelled_data_or_a_target_is_one_line(workdir, value, words):
    proc = run_cli(["model=tiny_cnn", f"validate.metric={value}", *FAST], workdir)
    row = results.load(workdir / "outputs").runs.iloc[0]
    assert proc.returncode == 1 and row.status == "failed" and words in row.error, row.error
    assert "Traceback" not in proc.stdout + proc.stderr


def test_top1_counts_only_the_batches_its_labels_fit():
    """A batch whose labels the output cannot index (12 on 10 classes, a -100 'ignore') is left out of top-1, and
    the top-1 rows say how many samples they are over."""
    from stages import accuracy

    class Runner:
        on_gpu = False

        def infer(self, feeds):
            return {"logits": feeds["input"]}

    logits = np.eye(10, dtype=np.float32)[:8]
    batches = [({"input": logits}, np.arange(8), 8), ({"input": logits}, np.array([12, *range(7)]), 8),
               ({"input": logits}, np.array([-100, *range(7)]), 8)]
    rows, info, predictions = accuracy.evaluate(Runner(), Runner(), batches, "fp32")
    samples = {r["metric"]: r["samples"] for r in rows}
    values = {r["metric"]: r["value"] for r in rows}
    assert samples["rel_l2_err"] == 24 and samples["top1_accuracy"] == 8 and values["top1_accuracy"] == 1.0
    # per sample: every one compared (agree), only the first batch's judged against its labels
    assert len(predictions["sample"]) == 24 and predictions["agree"].all()
    assert list(predictions["run_correct"][:8]) == [True] * 8 and list(predictions["run_correct"][8:]) == [None] * 16


def test_non_finite_data_is_refused_naming_the_array_and_sample(workdir):
    data = np.zeros((8, 3, 32, 32), dtype=np.float32)
    data[5, 1, 2, 3] = np.nan
    np.savez(workdir / "nan.npz", input=data, labels=np.zeros(8, dtype=np.int64))
    proc = run_cli(["model=tiny_cnn", "validate.data=nan.npz", *FAST], workdir)
    row = results.load(workdir / "outputs").runs.iloc[0]
    assert proc.returncode == 1 and row.status == "failed" and "Traceback" not in proc.stdout
    for word in ("validate.data = 'nan.npz': array 'input'", "1 non-finite value(s) (nan)", "at sample 5",
                 "(5, 1, 2, 3)"):
        assert word in row.error, row.error


def test_a_non_finite_value_in_a_later_loader_batch_names_its_sample_in_the_data_set(monkeypatch):
    from stages import datasets
    from stages import inputs as model_inputs
    from stages.api import StageInputError

    spec = model_inputs.InputSpec("x", ("batch", 4), np.dtype("float32"))
    later = np.ones((3, 4), dtype=np.float32)
    later[1, 2] = np.inf
    batches = [{"x": np.ones((3, 4), dtype=np.float32)}, {"x": later}]
    monkeypatch.setattr(datasets, "_raw", lambda source, key: batches)  # what the loader yields
    with pytest.raises(StageInputError, match=r"array 'x' holds 1 non-finite value\(s\) \(inf\); the first at "
                                              r"sample 4 \(index \(1, 2\)\)"):
        list(datasets.batches({"_target_": "loader"}, [spec], "validate.data", {"batch": 2}, 100))

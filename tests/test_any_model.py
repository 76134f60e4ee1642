"""Any model, any inputs, through the CLI: a tiny BERT from Hugging Face, an ONNX with three int64 inputs and two
outputs, a factory with declared inputs; named axes sized by axes.<name>, one export per sequence sweep, and one
clear line for every input the config gets wrong."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from pipeline import results
from stages import inputs as model_inputs
from tests.conftest import FAST, run_cli

BERT = ["model=hf", "model.config.hidden_size=32", "model.config.num_hidden_layers=2",
        "model.config.num_attention_heads=2", "model.config.intermediate_size=64", "model.config.vocab_size=100"]
FACTORY = ["model=factory", "model._target_=tests.factories.two_inputs", "model.inputs.ids.shape=[batch,sequence]",
           "model.inputs.ids.dtype=int64", "model.inputs.ids.range=[0,50]", "model.inputs.x.shape=[batch,8]",
           "axes.sequence=6"]
ONNX = ["model=onnx", "model.path=three.onnx", "axes.seq=8"]


def three_input_onnx(path, rows=10):
    """input_ids, attention_mask, token_type_ids [batch, seq] int64 -> hidden [batch, seq, 4], pooled [batch, 4]."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((rows, 4)).astype(np.float32), "words"),
             numpy_helper.from_array(rng.standard_normal((2, 4)).astype(np.float32), "types"),
             numpy_helper.from_array(np.array([2], dtype=np.int64), "last")]
    nodes = [helper.make_node("Gather", ["words", "input_ids"], ["w"]),
             helper.make_node("Gather", ["types", "token_type_ids"], ["t"]),
             helper.make_node("Add", ["w", "t"], ["e"]),
             helper.make_node("Cast", ["attention_mask"], ["m"], to=TensorProto.FLOAT),
             helper.make_node("Unsqueeze", ["m", "last"], ["m3"]),
             helper.make_node("Mul", ["e", "m3"], ["hidden"]),
             helper.make_node("ReduceMean", ["hidden"], ["pooled"], axes=[1], keepdims=0)]
    ins = [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "seq"])
           for n in ("input_ids", "attention_mask", "token_type_ids")]
    outs = [helper.make_tensor_value_info("hidden", TensorProto.FLOAT, ["batch", "seq", 4]),
            helper.make_tensor_value_info("pooled", TensorProto.FLOAT, ["batch", 4])]
    model = helper.make_model(helper.make_graph(nodes, "three", ins, outs, inits),
                              opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, path)
    return path


def test_specs_from_an_onnx_graph(tmp_path):
    specs = {s.name: s for s in model_inputs.specs_from_onnx(three_input_onnx(tmp_path / "m.onnx", rows=10))}
    assert [s.dims for s in specs.values()] == [("batch", "seq")] * 3
    assert (specs["input_ids"].values, specs["input_ids"].low, specs["input_ids"].high) == ("integers", 0, 10)
    assert (specs["token_type_ids"].low, specs["token_type_ids"].high) == (0, 2)  # the rows of the table it indexes
    assert specs["attention_mask"].values == "mask"
    arrays = model_inputs.random_inputs(list(specs.values()), {"batch": 3, "seq": 5}, 0)
    assert arrays["input_ids"].shape == (3, 5) and arrays["input_ids"].max() < 10
    assert arrays["attention_mask"].min() == 1 and arrays["token_type_ids"].max() <= 1
    padded = model_inputs.resolve(list(specs.values()), {"inputs": {"attention_mask": {"padding": 0.4}}})
    mask = model_inputs.random_inputs(padded, {"batch": 2, "seq": 5}, 0)["attention_mask"]
    assert mask.tolist() == [[1, 1, 1, 0, 0]] * 2


@pytest.mark.slow
def test_a_tiny_bert_from_hugging_face_with_a_precision_and_sequence_sweep(workdir):
    proc = run_cli(["-m", *BERT, "precision=fp32,int8", "axes.sequence=16,64", "hydra.sweep.dir=bert", *FAST],
                   workdir, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    loaded = results.load(workdir / "bert")
    runs = loaded.runs
    assert set(runs.status) == {"ok"} and set(runs.model_id) == {"hf:bert"}
    assert sorted(runs.axes_sequence) == [16, 16, 64, 64]
    assert sorted(runs.export_cache) == ["hit", "hit", "hit", "miss"]  # one export serves every length
    fp32 = runs[runs.precision == "fp32"]
    assert sorted(fp32.convert_cache) == ["hit", "miss"] and sorted(fp32.build_cache) == ["hit", "miss"]
    acc = loaded.accuracy
    assert set(acc.output) == {"last_hidden_state", "pooler_output"}  # every output, by its name
    assert (acc.samples == 2 * 1).all()  # validate.batches=2 at batch 1
    int8 = acc[acc.run_id.isin(runs[runs.precision == "int8"].run_id) & (acc.metric == "cosine")]
    assert (int8.value > 0.95).all()
    on_torch = run_cli([*BERT, "backend=torch", "backend.device=cpu", "axes.sequence=16", "hydra.run.dir=t", *FAST],
                       workdir)
    assert on_torch.returncode == 0, on_torch.stdout[-3000:]
    row = results.load(workdir / "t").runs.iloc[0]
    assert row.status == "ok" and row.model_inputs == "input_ids attention_mask token_type_ids"


@pytest.mark.slow
def test_an_onnx_with_three_int64_inputs_and_two_outputs(workdir):
    three_input_onnx(workdir / "three.onnx")
    one = run_cli([*ONNX, "hydra.run.dir=one", *FAST], workdir)
    assert one.returncode == 0, one.stdout[-3000:]
    loaded = results.load(workdir / "one")
    assert loaded.runs.iloc[0].status == "ok" and loaded.runs.iloc[0].model_id.startswith("onnx:three.onnx@")
    assert set(loaded.accuracy.output) == {"hidden", "pooled"}
    sweep = run_cli(["-m", "model=onnx", "model.path=three.onnx", "axes.seq=8,32", "hydra.sweep.dir=s", *FAST],
                    workdir)
    assert sweep.returncode == 0, sweep.stdout[-3000:]
    runs = results.load(workdir / "s").runs
    assert set(runs.status) == {"ok"} and sorted(runs.axes_seq) == [8, 32]
    unsized = run_cli(["model=onnx", "model.path=three.onnx", "hydra.run.dir=unsized", *FAST], workdir)
    error = results.load(workdir / "unsized").runs.iloc[0].error
    assert unsized.returncode == 1 and "input 'input_ids' has the axis 'seq'" in error and "set axes.seq=N" in error


@pytest.mark.slow
def test_a_factory_with_declared_inputs_on_two_backends(workdir):
    for backend in ("onnxruntime", "torch"):
        proc = run_cli([*FACTORY, f"backend={backend}", "backend.device=cpu" if backend == "torch" else "seed=0",
                        f"hydra.run.dir={backend}", *FAST], workdir)
        assert proc.returncode == 0, proc.stdout[-3000:]
        loaded = results.load(workdir / backend)
        assert loaded.runs.iloc[0].status == "ok"
        assert loaded.runs.iloc[0].model_id == "factory:tests.factories.two_inputs"
        assert set(loaded.accuracy.output) == {"output_0", "output_1"}


@pytest.mark.slow
@pytest.mark.parametrize("args, words", [
    ([*FACTORY, "model.inputs.ids2.shape=[batch,4]"], ["model.inputs.ids2", "takes no 'ids2'", "ids, x"]),
    ([*FACTORY, "model.inputs.ids.rnage=[0,5]"], ["model.inputs.ids.rnage", "valid: shape, dtype, range, padding"]),
    ([*FACTORY, "axes.sequence=0"], ["axes.sequence = 0", ">= 1"]),
    ([*ONNX, "model.inputs.input_idz.range=[0,5]"], ["model.inputs.input_idz", "no input 'input_idz'",
                                                      "input_ids, attention_mask, token_type_ids"]),
    ([*ONNX, "model.inputs.input_ids.dtype=float32"], ["model.inputs.input_ids.dtype = float32", "takes int64"]),
    ([*ONNX, "model.inputs.input_ids.shape=[batch,seq,4]"], ["model.inputs.input_ids.shape", "has 2 dims"]),
])
def test_inputs_the_config_gets_wrong_fail_before_the_export(workdir, args, words):
    three_input_onnx(workdir / "three.onnx")
    proc = run_cli([*args, *FAST], workdir)
    assert proc.returncode == 1 and "Traceback" not in proc.stdout + proc.stderr
    row = results.load(workdir / "outputs").runs.iloc[0]
    assert row.status == "failed" and pd_isna(row.get("export_seconds")), row.error
    for word in words:
        assert word in row.error, row.error


def pd_isna(value) -> bool:
    import pandas as pd

    return value is None or pd.isna(value)


@pytest.mark.slow
def test_a_model_source_that_does_not_import_says_how_to_get_it(workdir):
    pytest.importorskip("torch")
    if __import__("importlib").util.find_spec("timm") is not None:
        pytest.skip("timm imports here")
    proc = run_cli(["model=timm", "model.name=resnet18", *FAST], workdir)
    row = results.load(workdir / "outputs").runs.iloc[0]
    assert proc.returncode == 3 and row.status == "unsupported" and "pip install timm" in row.error  # nothing ran
    assert row.model_id == "timm:resnet18"


@pytest.mark.slow
def test_a_factory_is_traced_at_the_runs_axis_sizes(workdir):
    """A model that works only at its own length: traced at axes.sequence, not at a fixed example size."""
    for backend in ("onnxruntime", "torch"):
        proc = run_cli(["model=factory", "model._target_=tests.factories.fixed_length",
                        "model.inputs.ids.shape=[batch,sequence]", "model.inputs.ids.dtype=int64",
                        "model.inputs.ids.range=[0,50]", "axes.sequence=64", f"backend={backend}",
                        f"hydra.run.dir={backend}", *FAST], workdir)
        row = results.load(workdir / backend).runs.iloc[0]
        assert proc.returncode == 0 and row.status == "ok", row.error


@pytest.mark.slow
def test_dims_named_with_dots_or_left_unnamed_get_hints_that_work(workdir):
    """Paddle's `DynamicDimension.1` and an unnamed `?` dim: the error's suggestions, typed as given, run."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["DynamicDimension.0", 3, "DynamicDimension.1", "?"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["DynamicDimension.0", 3, "DynamicDimension.1", "?"])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(workdir / "dyn.onnx"))
    base = ["model=onnx", "model.path=dyn.onnx", "batch_size=2", *FAST]
    unsized = run_cli([*base, "hydra.run.dir=unsized"], workdir)
    error = results.load(workdir / "unsized").runs.iloc[0].error
    assert unsized.returncode == 1 and "set axes.DynamicDimension_1=N" in error, error
    assert "model.inputs.x.shape=[batch,3,N,N]" in error, error
    for name, hint in (("axes", ["axes.DynamicDimension_1=6", "axes.x_3=5"]),
                       ("shape", ["model.inputs.x.shape=[batch,3,6,5]"])):
        proc = run_cli([*base, *hint, f"hydra.run.dir={name}"], workdir)
        row = results.load(workdir / name).runs.iloc[0]
        assert proc.returncode == 0 and row.status == "ok", (name, row.error)

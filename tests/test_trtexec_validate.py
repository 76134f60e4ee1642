"""The trtexec backend's validate stage on a CPU: its command line, the --exportOutput parser, and the whole stage
against a fake `trtexec` on PATH (a Python script written here) that loads the raw input files as trtexec does
(sampleUtils.cpp loadFromFile: the file must hold exactly the binding's bytes), computes the model's function,
and writes its outputs in the layout of sampleReporting.cpp exportJSONOutput (names unescaped, 6 significant
digits). ONNX Runtime runs the real fp32 reference."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import stages
from stages import inputs as model_inputs
from stages import validate
from stages.api import StageInputError, check_params
from stages.trtexec import backend, parse

# --------------------------------------------------------------------------------------------- command line


def test_validation_command():
    cmd = backend.validation_command("/opt/trtexec", Path("/e/m.engine"), {"x": (8, 4)},
                                     {"x": Path("/w/input0.bin"), "ids:0": Path("/w/input1.bin")}, Path("/w/o.json"))
    assert cmd == ["/opt/trtexec", "--loadEngine=/e/m.engine", "--loadInputs='x':/w/input0.bin,'ids:0':/w/input1.bin",
                   "--exportOutput=/w/o.json", "--iterations=1", "--warmUp=0", "--duration=0", "--shapes=x:8x4"]


def test_validation_command_takes_extra_args_flag_by_flag():
    cmd = backend.validation_command("trtexec", Path("e"), {}, {"x": Path("i.bin")}, Path("o.json"),
                                     extra_args=["--warmUp=10", "--useSpinWait"])
    assert "--warmUp=0" not in cmd and cmd[-2:] == ["--warmUp=10", "--useSpinWait"]
    assert not any(a.startswith("--shapes") for a in cmd)  # a static engine needs none


def test_a_path_trtexec_would_split_is_refused():
    with pytest.raises(StageInputError, match="a,b"):
        backend.validation_command("trtexec", Path("e"), {}, {"x": Path("/a,b/input0.bin")}, Path("o.json"))


# --------------------------------------------------------------------------------------------- --exportOutput

EXPORTED = """[
  { "name" : "logits"
  , "dimensions" : "2x3"
  , "values" : [ 0.5, -1.25, 1e-05, 3, -nan, inf ]
  }
, { "name" : "count"
  , "dimensions" : ""
  , "values" : [ 7 ]
  }
]
"""


def test_exported_outputs():
    got = parse.parse_outputs(EXPORTED)
    assert list(got) == ["logits", "count"]
    assert got["logits"].shape == (2, 3) and got["logits"][0].tolist() == [0.5, -1.25, 1e-05]
    assert np.isnan(got["logits"][1, 1]) and got["logits"][1, 2] == np.inf
    assert got["count"].shape == () and got["count"] == 7


def test_exported_outputs_of_the_wrong_size_are_refused():
    with pytest.raises(ValueError, match="'logits' has 6 values for dimensions '4x3'"):
        parse.parse_outputs(EXPORTED.replace('"2x3"', '"4x3"'), "out.json")


# --------------------------------------------------------------------------------------------- the stage

FAKE_TRTEXEC = '''#!{python}
"""trtexec as far as validation needs it: y = 2 * x + 1 on the loaded inputs, written as exportJSONOutput does."""
import sys
import numpy as np

OUTPUT = {output}  # the output tensor's name, written unescaped as trtexec writes it
args = dict(a.split("=", 1) if "=" in a else (a, "") for a in sys.argv[1:])
if len(args) != len(sys.argv) - 1:
    sys.exit("Unknown option: a flag given twice")
print("&&&& RUNNING TensorRT.trtexec [TensorRT v110100] [b106] # trtexec " + " ".join(sys.argv[1:]))
assert (args["--iterations"], args["--warmUp"], args["--duration"]) == ("1", "0", "0"), args
shape = [int(d) for d in args["--shapes"].split(":")[1].split("x")]
name, path = args["--loadInputs"].split(":", 1)
assert name == "'x'", name
raw = open(path, "rb").read()
itemsize = len(raw) // int(np.prod(shape))
x = np.frombuffer(raw, dtype={{2: np.float16, 4: np.float32}}[itemsize]).astype(np.float32).reshape(shape)
y = 2 * x + 1
with open(args["--exportOutput"], "w") as f:
    f.write('[\\n  {{ "name" : "' + OUTPUT + '"\\n  , "dimensions" : "' + "x".join(map(str, y.shape)) + '"\\n')
    f.write('  , "values" : [ ' + ", ".join("%g" % v for v in y.ravel()) + ' ]\\n  }}\\n]\\n')
print("&&&& PASSED TensorRT.trtexec [TensorRT v110100] [b106] # trtexec")
'''


OUTPUT = 'y "2\\1"'  # a quote and a backslash: trtexec writes them into its JSON as they are


def model(path: Path, input_type=TensorProto.FLOAT, output=OUTPUT) -> Path:
    """y = 2 * x + 1 on x [N, 4]; with an fp16 input, a Cast first (as AutoCast's graph with fp16 I/O takes it)."""
    x = helper.make_tensor_value_info("x", input_type, ["N", 4])
    y = helper.make_tensor_value_info(output, TensorProto.FLOAT, ["N", 4])
    nodes = [helper.make_node("Cast", ["x"], ["xf"], to=TensorProto.FLOAT)] if input_type != TensorProto.FLOAT else []
    nodes += [helper.make_node("Mul", ["xf" if nodes else "x", "two"], ["m"]),
              helper.make_node("Add", ["m", "one"], [output])]
    inits = [helper.make_tensor(n, TensorProto.FLOAT, [], [v]) for n, v in (("two", 2.0), ("one", 1.0))]
    graph = helper.make_graph(nodes, "g", [x], [y], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), path)
    return path


@pytest.fixture
def fake_trtexec(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    exe = bin_dir / "trtexec"
    exe.write_text(FAKE_TRTEXEC.format(python=sys.executable, output=repr(OUTPUT)))
    exe.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{__import__('os').environ['PATH']}")
    monkeypatch.setenv("PIPELINE_GPU_LOCK_DIR", str(tmp_path))
    return exe


FEEDS = {"batch_size": 3, "axes": {}, "inputs": {}, "input_shape": None}
OPTIONS = {"path": "trtexec", "extra_args": [], "optimization_level": 3, "max_aux_streams": 0, "workspace_mb": 0,
           "timing_cache": True}
PARAMS = {"plugin": "stages.trtexec", "options": OPTIONS, "feeds": FEEDS, "seed": 5,
          "validation": {"batches": 2, "data": None, "max_samples": 1024, "metric": None}}


def run_stage(tmp_path, converted: Path, **options):
    """The shared validate stage on the trtexec backend's engine, as the runner hands it the plugin and options."""
    out = tmp_path / "validate"
    out.mkdir()
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"plan")
    reference = model(tmp_path / "export.onnx")
    params = {**PARAMS, "options": {**OPTIONS, **options}}
    return out, validate.run({"engine": engine, "onnx": converted, "reference": reference}, params, out)


def test_fp32_engine_agrees_with_the_reference(tmp_path, fake_trtexec):
    out, result = run_stage(tmp_path, model(tmp_path / "converted.onnx"))
    rows = {r["metric"]: r["value"] for r in result.tables["accuracy"]}
    assert {r["output"] for r in result.tables["accuracy"]} == {OUTPUT}
    # only the 6 significant digits trtexec prints (at most 5e-6 of each value) separate them
    assert rows["rel_l2_err"] < 5e-6 and rows["max_abs_err"] < 5e-5 and rows["cosine"] == pytest.approx(1.0)
    assert result.info["tensorrt"] == "11.1.0" and result.info["rel_l2_err"] == rows["rel_l2_err"]
    # the inputs are the seeded validation batches every backend compares on
    specs = model_inputs.specs_from_onnx(tmp_path / "export.onnx")
    for batch in range(2):
        want = model_inputs.random_inputs(specs, {"batch": 3}, 5 + model_inputs.SEED_VALIDATION + batch)["x"]
        got = np.fromfile(out / f"batch{batch}" / "input0.bin", dtype=np.float32).reshape(3, 4)
        np.testing.assert_array_equal(got, want)
        assert (out / f"batch{batch}" / "trtexec.log").is_file()


def test_fp16_inputs_get_fp16_files(tmp_path, fake_trtexec):
    out, result = run_stage(tmp_path, model(tmp_path / "converted.onnx", TensorProto.FLOAT16))
    assert (out / "batch0" / "input0.bin").stat().st_size == 3 * 4 * 2
    rel = {r["metric"]: r["value"] for r in result.tables["accuracy"]}["rel_l2_err"]
    assert 1e-5 < rel < 1e-3  # the reference's values rounded to fp16: a small error, and not none


def test_a_failing_trtexec_fails_the_stage_with_its_last_lines(tmp_path, fake_trtexec):
    with pytest.raises(RuntimeError, match="Unknown option"):
        run_stage(tmp_path, model(tmp_path / "converted.onnx"), extra_args=["--foo=1", "--foo=2"])


def test_extra_args_that_would_change_what_is_validated_are_refused(tmp_path, fake_trtexec):
    with pytest.raises(StageInputError, match="--loadInputs"):
        run_stage(tmp_path, model(tmp_path / "converted.onnx"), extra_args=["--loadInputs=x:mine.bin"])


def test_in_the_trtexec_graph_with_the_params_it_declares():
    from pipeline.run import runner
    from tests.test_tensorrt_build import config

    backend_config = config(backend="trtexec")["backend"]
    node = next(n for n in runner.plan(backend_config["dag"], backend_config) if n.name == "validate")
    assert stages.load(node.stage) is validate
    assert node.inputs == {"engine": ("build", "engine"), "onnx": ("convert", "onnx"), "reference": ("export", "onnx")}
    assert node.params["plugin"] == "stages.trtexec" and set(node.params["options"]) == set(OPTIONS)
    assert set(node.params) == set(PARAMS) == set(validate.PARAMS)
    check_params(validate.PARAMS, node.params, "backend.dag.validate.params")

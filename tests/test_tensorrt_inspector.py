"""Engine-inspector JSON (TensorRT 10.x and 11.x schemas) into `layers` rows, joined with per-layer times.
The fixtures in tests/data/trtexec/ are hand-written in the documented formats (see the README there)."""
from pathlib import Path

import pytest

from pipeline import results
from stages.tensorrt import inspector
from stages.tensorrt.inspector import LayerInfo

DATA = Path(__file__).parent / "data" / "trtexec"


def layers(name):
    return inspector.parse((DATA / name).read_text())


def test_10x_schema():
    parsed = layers("trt10_layer_info.json")
    assert [layer.name for layer in parsed] == ["node_Conv_55 + node_relu", "node_Conv_58 + node_relu_1",
                                                "node_Conv_61 + node_relu_2", "node_mean", "node_Reshape_64",
                                                "node_Gemm_65"]
    conv = parsed[0]
    assert (conv.layer_type, conv.dtype, conv.stream, conv.profile) == ("CaskConvolution", "fp32", 0, 0)
    assert conv.tactic.startswith("sm80_xmma_fprop_implicit_gemm_f32f32")
    assert parsed[3].tactic == "0x0000000000000007"  # no TacticName: the tactic's value


def test_11x_schema():
    parsed = {layer.name: layer for layer in layers("trt11_layer_info.json")}
    assert parsed["Reformatting CopyNode for Input Tensor 0 to node_Conv_55 + node_relu"].dtype == "fp16"
    assert parsed["node_Conv_58 + node_relu_1"].stream == 1  # an auxiliary stream
    assert parsed["node_Gemm_65"].layer_type == "CaskGemmMatrixMultiply" and parsed["node_Gemm_65"].dtype == "fp16"
    assert parsed["output_cast_to_fp32"].dtype == "fp32"


def test_11x_fixture_spells_the_keys_as_nvidia_documents_them():
    text = (DATA / "trt11_layer_info.json").read_text()
    assert '"DataType"' in text and '"Datatype"' not in text and '"IOMode"' in text and '"I/O Tensors"' in text


@pytest.mark.parametrize("tensor, dtype", [
    ({"DataType": "FP16", "Format": "Row major linear"}, "fp16"),         # 11.x as NVIDIA documents it
    ({"Datatype": "BF16", "Format": "Row major linear"}, "bf16"),         # the other spelling
    ({"datatype": "Int8"}, "int8"), ({"DATATYPE": "FP8"}, "fp8"),          # any case
    ({"format/datatype": "Row major linear FP32"}, "fp32"),               # 10.x's combined key, lower case
    ({"Format": "Channel major FP16 format where channel % 8 == 0"}, "fp16"),  # no type key: the Format words
    ({"Format": "Row major linear"}, None),                               # nothing names a type
])
def test_tensor_keys_are_read_case_insensitively_with_format_as_fallback(tensor, dtype):
    layer = {"NAME": "a", "layertype": "Reformat", "Outputs": [{"Name": "t", **tensor}], "StreamID": 2}
    got = inspector.parse({"layers": [layer]})[0]
    assert (got.name, got.layer_type, got.dtype, got.stream) == ("a", "Reformat", dtype, 2)


def test_a_type_key_wins_over_the_format_words():
    tensor = {"Format": "Row major linear FP32 format", "DataType": "Half"}
    assert inspector.parse([{"Name": "a", "Outputs": [tensor]}])[0].dtype == "fp16"


def test_profile_suffixes_split_the_engine_by_optimization_profile():
    parsed = layers("trt10_layer_info_2profiles.json")
    assert [(layer.name, layer.profile) for layer in parsed] == [
        ("node_Conv_55 + node_relu", 0), ("node_Gemm_65", 0), ("node_Conv_55 + node_relu", 1), ("node_Gemm_65", 1)]
    assert parsed[0].dtype == "fp16"  # the input was "N/A due to dynamic shapes": the output tells
    assert parsed[2].dtype == "int8" and parsed[2].stream == 1
    assert parsed[1].tactic == "0x0a1b2c3d4e5f6071"  # an empty TacticName falls back to the value
    rows0 = inspector.rows({}, parsed, "x", profile=0)
    rows1 = inspector.rows({}, parsed, "x", profile=1)
    assert [r["dtype"] for r in rows0] == ["fp16", "fp32"] and [r["dtype"] for r in rows1] == ["int8", "fp32"]


@pytest.mark.parametrize("name, expected", [
    ("conv1", ("conv1", 0)), ("conv1 [profile 1]", ("conv1", 1)), ("a + b [profile 12]", ("a + b", 12)),
    ("node_of_Y [profile 1] [Op: MyelinReformat]", ("node_of_Y [Op: MyelinReformat]", 1)),
])
def test_split_profile(name, expected):
    assert inspector.split_profile(name) == expected


def test_layer_names_only():
    parsed = layers("layer_info_names_only.json")
    assert all(layer.layer_type is None and layer.dtype is None for layer in parsed)
    rows = inspector.rows({}, parsed, "tensorrt-profiler")
    assert len(rows) == 6 and all(r["time_ms"] is None and r["share"] is None for r in rows)


def test_root_may_be_the_list_of_layers():
    assert inspector.parse([{"Name": "a", "LayerType": "Reformat", "Outputs": [{"Datatype": "BF16"}]}]) == [
        LayerInfo("a", 0, "Reformat", "bf16", None, None)]


@pytest.mark.parametrize("text, dtype", [
    ("Row major linear FP32", "fp32"), ("Row major linear FP16 format", "fp16"),
    ("Channel major FP16 format where channel % 8 == 0", "fp16"),
    ("Thirty-two wide channel vectorized row major Int8 format.", "int8"), ("Float", "fp32"), ("Half", "fp16"),
    ("Int8", "int8"), ("BF16", "bf16"), ("FP8", "fp8"), ("Row major linear Int32", "int32"), ("Bool", "bool"),
    ("INT64", "int64"), ("UInt8", "uint8"), ("FP4", "fp4"), ("N/A due to dynamic shapes", None), ("", None),
    (None, None),
])
def test_dtype_of_format_descriptions(text, dtype):
    assert inspector.dtype_of(text) == dtype


def test_rows_join_times_with_layer_information():
    info = layers("trt10_layer_info_2profiles.json")
    times = {"node_Conv_55 + node_relu": 0.3, "node_Gemm_65": 0.1, "node_Conv_55 + node_relu [profile 1]": 9.0,
             "Reformatting CopyNode for Output Tensor 0 to node_Gemm_65": 0.1}
    rows = inspector.rows(times, info, "tensorrt-profiler")
    assert [r["layer"] for r in rows] == ["node_Conv_55 + node_relu", "node_Gemm_65",
                                         "Reformatting CopyNode for Output Tensor 0 to node_Gemm_65"]
    assert [r["share"] for r in rows] == pytest.approx([0.6, 0.2, 0.2])  # profile 1's 9 ms are not counted
    assert rows[0]["tactic"].startswith("sm89") and rows[0]["stream"] == 0 and rows[0]["time_ms"] == 0.3
    assert rows[2]["layer_type"] is None and rows[2]["dtype"] is None  # timed but not in the inspector output
    assert {r["source"] for r in rows} == {"tensorrt-profiler"}


def test_rows_fit_the_layers_table():
    rows = inspector.rows({"node_mean": 0.25}, layers("trt10_layer_info.json"), "tensorrt-profiler")
    table = results.build_table("layers", [{"run_id": "r", **r} for r in rows])
    assert table.num_rows == 1 and table.column("dtype").to_pylist() == ["fp32"]
    assert table.column("median_ms").to_pylist() == [None]  # IProfiler sums: no median


def test_median_beside_the_mean_in_the_layers_table():
    rows = inspector.rows({"a": 0.3, "b [profile 1]": 9.0, "c": 0.1}, [], "trtexec-profile",
                          median_ms={"a": 0.25, "b [profile 1]": 8.0, "c": None})
    assert [(r["layer"], r["time_ms"], r["median_ms"]) for r in rows] == [("a", 0.3, 0.25), ("c", 0.1, None)]
    assert results.SCHEMAS["layers"].field("median_ms").type == "double"
    table = results.build_table("layers", [{"run_id": "r", **r} for r in rows])
    assert table.column("median_ms").to_pylist() == [0.25, None]


def test_a_layer_on_an_auxiliary_stream_means_overlapping_times():
    assert inspector.uses_aux_streams(layers("trt11_layer_info.json"))  # node_Conv_58 runs on stream 1
    assert not inspector.uses_aux_streams(layers("trt10_layer_info.json"))
    assert not inspector.uses_aux_streams(layers("layer_info_names_only.json"))  # no stream is known

"""Where a slower build spends its time: two hand-made `layers` tables, and two real ONNX Runtime profiles (fp32 and
fp16 of the digits model, through the CLI)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from pipeline import results
from pipeline.analysis import layer_diff
from tests.conftest import FAST, run_cli


def _layers(rows):
    return pd.DataFrame([{"layer": n, "layer_type": t, "dtype": d, "time_ms": ms} for n, t, d, ms in rows])


A = _layers([("conv1", "Conv", "float", 0.50), ("relu1", "Relu", "float", 0.05), ("fc", "Gemm", "float", 0.20),
             ("pool", "MaxPool", "float", 0.10)])
B = _layers([("conv1", "Conv", "float16", 0.30), ("relu1", "Relu", "float16", 0.05), ("fc", "Gemm", "float", 0.45),
             ("cast_in", "Cast", "float16", 0.08), ("reformat_fc", "Reformat", "float", 0.12),
             ("pool", "AveragePool", "float16", 0.02)])


def test_hand_made_tables_give_contributors_added_layers_and_precision_changes():
    d = layer_diff.diff(A, B)
    assert d.total_a_ms == pytest.approx(0.85) and d.total_b_ms == pytest.approx(1.02)
    top = d.top(3)
    assert [(x.layer, round(x.delta_ms, 3)) for x in top] == [("fc", 0.25), ("conv1", -0.2), ("reformat_fc", 0.12)]
    # a layer whose type changed is one gone and one added
    assert {x.name for x in d.added} == {"cast_in (Cast)", "reformat_fc (Reformat)", "pool (AveragePool)"}
    assert all(not x.b_layer for x in d.layers)  # no type has unmatched layers on both sides
    assert [x.name for x in d.removed] == ["pool (MaxPool)"]
    assert [(x.layer, x.a_dtype, x.b_dtype) for x in d.precision_changed] == [("conv1", "float", "float16"),
                                                                              ("relu1", "float", "float16")]
    text = "\n".join(layer_diff.render(d))
    assert "layers: 0.85 -> 1.02 ms per inference (+0.17 ms) over 4 / 6 layers" in text
    assert "+0.25 ms  fc (Gemm): 0.2 ms -> 0.45 ms" in text
    assert "-0.2 ms  conv1 (Conv): 0.5 ms -> 0.3 ms  [float -> float16]" in text
    assert "added in B (3, +0.22 ms): reformat_fc (Reformat) 0.12 ms, cast_in (Cast) 0.08 ms" in text
    assert "precision changed (2): conv1 (Conv) float -> float16, relu1 (Relu) float -> float16" in text


def test_layers_renamed_by_fusion_pair_by_type_and_order():
    a = _layers([("relu_nchwc", "Conv", "float", 0.1), ("relu_2_nchwc", "Conv", "float", 4.0),
                 ("gemm", "Gemm", "float", 0.2)])
    b = _layers([("cast_a_nchwc", "Conv", "float", 0.1), ("cast_b_nchwc", "Conv", "float", 4.8),
                 ("gemm", "Gemm", "float", 0.2), ("Max_2", "Max", "float", 0.01)])
    d = layer_diff.diff(a, b)
    assert d.top(1)[0].name == "relu_2_nchwc -> cast_b_nchwc (Conv)" and d.top(1)[0].delta_ms == pytest.approx(0.8)
    assert [x.name for x in d.added] == ["Max_2 (Max)"] and d.removed == []


def test_median_ms_is_used_where_every_layer_has_one_and_duplicates_are_summed():
    a = _layers([("x", "Conv", "float", 9.0), ("x", "Conv", "float", 9.0)]).assign(median_ms=[1.0, 2.0])
    b = _layers([("x", "Conv", "float", 1.0)]).assign(median_ms=[None])
    d = layer_diff.diff(a, b)
    assert d.total_a_ms == 3.0 and d.total_b_ms == 1.0  # A: median_ms summed over its two rows; B: time_ms


def test_a_table_without_the_columns_is_named():
    with pytest.raises(ValueError, match="B's layers table lacks dtype, time_ms"):
        layer_diff.diff(A, pd.DataFrame({"layer": ["x"], "layer_type": ["Conv"]}))


@pytest.mark.slow
def test_two_real_onnxruntime_profiles_fp32_against_fp16(tmp_path: Path):
    proc = run_cli(["-m", "precision=fp32,fp16", "backend=onnxruntime", "report.enabled=false", *FAST], tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    loaded = results.load(next((tmp_path / "outputs/sweeps/multirun").iterdir()), tables=("runs", "layers"))
    run_of = dict(zip(loaded.runs["precision"], loaded.runs["run_id"]))
    layers = {p: loaded.layers[loaded.layers["run_id"] == r] for p, r in run_of.items()}
    assert not layers["fp32"].empty and not layers["fp16"].empty
    d = layer_diff.diff(layers["fp32"], layers["fp16"])
    assert d.total_a_ms == pytest.approx(layers["fp32"]["time_ms"].sum())
    # AutoCast's fp16 graph on the CPU provider: ORT runs its convolutions in fp32 behind inserted casts, fused
    # under new names (paired with fp32's by type and order), plus a Cast of the output back to fp32
    assert any(x.layer_type == "Cast" for x in d.added), [x.name for x in d.added]
    assert all(x.a_ms is None for x in d.added)
    convs = [x for x in d.layers if x.layer_type == "Conv"]
    assert convs and all(x.a_ms is not None and x.b_ms is not None for x in convs), [x.name for x in convs]
    assert sum(x.delta_ms for x in d.layers) == pytest.approx(d.total_b_ms - d.total_a_ms)
    text = layer_diff.render(d)
    assert text[0].startswith("layers: ") and any("added in B" in line for line in text)

"""The torch backend on this CPU machine (host-timed path), through the real CLI."""
import pytest

from pipeline import results
from tests.conftest import FAST, run_cli

pytestmark = pytest.mark.slow


def test_torch_cpu_sweep(workdir):
    proc = run_cli(["-m", "backend=torch", "precision=fp32,bf16,tf32,int8", "backend.device=cpu", *FAST], workdir)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    runs = results.load(workdir / "outputs").runs.set_index("precision")
    assert list(runs.loc[["fp32", "bf16"], "status"]) == ["ok", "ok"]
    assert runs.loc["tf32", "status"] == "unsupported" and "TF32" in runs.loc["tf32", "error"]
    assert runs.loc["int8", "status"] == "unsupported" and "fake-quant" in runs.loc["int8", "error"]
    assert sorted(runs["model_cache"]) == ["hit"] * 3 + ["miss"]      # weights saved once
    assert runs.loc["fp32", "validate_rel_l2_err"] == 0.0              # eager fp32 is the reference itself
    assert 0 < runs.loc["bf16", "validate_rel_l2_err"] < 0.05
    s = results.load(workdir / "outputs").summary
    assert len(s.query("metric == 'flops' and stat == 'per_inference'")) == 2


def test_torch_needs_a_torch_model(workdir):
    (workdir / "m.onnx").write_bytes(b"")
    proc = run_cli(["backend=torch", "model=onnx", "model.path=m.onnx", *FAST], workdir)
    assert proc.returncode == 3  # unsupported: nothing ran
    row = results.load(workdir / "outputs").runs.iloc[0]
    assert row.status == "unsupported" and "needs a torch model" in row.error


def test_torch_profile_rows(workdir):
    proc = run_cli(["backend=torch", "model=resnet18", "backend.device=cpu", "profile.iterations=2", *FAST], workdir)
    assert proc.returncode == 0, proc.stdout[-3000:]
    layers = results.load(workdir / "outputs").layers
    ops, modules = layers[layers.layer_type == "operator"], layers[layers.layer_type == "module"]
    assert abs(ops["share"].sum() - 1.0) < 1e-6 and (ops["time_ms"] > 0).all()
    assert "aten::conv2d" in set(ops["layer"])
    assert {"layer1.0 (BasicBlock)", "fc (Linear)"} <= set(modules["layer"])
    assert set(layers["source"]) == {"torch-profiler"}

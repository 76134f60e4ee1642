"""The torch backend on this CPU machine (host-timed path), through the real CLI."""
import pytest

from pipeline import results
from tests.conftest import FAST, run_cli

pytestmark = pytest.mark.slow


def test_torch_cpu_sweep(workdir):
    proc = run_cli(["-m", "backend=torch", "precision=fp32,bf16,tf32,int8", "compile.device=cpu", *FAST], workdir)
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
    assert proc.returncode == 0
    row = results.load(workdir / "outputs").runs.iloc[0]
    assert row.status == "unsupported" and "needs a torch model" in row.error

"""The torch backend end to end on a GPU through the real CLI, and the NVML monitor."""
import time

import pytest

from pipeline import results
from tests.conftest import FAST, run_cli

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("precision, mode", [("fp16", "eager"), ("tf32", "eager"), ("bf16", "default")])
def test_torch_backend_on_gpu(workdir, precision, mode):
    proc = run_cli(["backend=torch", f"precision={precision}", f"backend.compile={mode}", "batch_size=8",
                    "benchmark.duration_s=0.5", *FAST[1:]], workdir)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r = results.load(workdir / "outputs")
    row = r.runs.iloc[0]
    assert row.status == "ok", row.error
    assert row.compile_device == "cuda" and row.benchmark_cuda_graph == True  # noqa: E712 (pandas boolean)
    assert row.benchmark_sm_clock_median_mhz > 100 and row.benchmark_temp_max_c > 0
    assert row.benchmark_throttled in (True, False)
    s = r.summary.set_index(["metric", "stat"])["value"]
    assert s[("gpu_compute", "median")] > 0 and s[("enqueue", "median")] > 0
    assert 0 < s[("achieved", "pct_of_peak")] < 100
    assert len(r.gpu) >= 2 and (r.gpu.sm_clock_mhz > 0).all()
    assert set(r.samples.metric) >= {"gpu_compute", "enqueue", "latency"}
    acc = r.accuracy.set_index("metric")["value"]
    assert acc["top1_agreement"] >= 0.5 and acc["rel_l2_err"] < 0.1
    # profile stage: device time per top-level op (eager) or per kernel (a compiled graph is one opaque op)
    ops = r.layers[r.layers.layer_type == ("operator" if mode == "eager" else "kernel")]
    assert len(ops) >= 3 and abs(ops["share"].sum() - 1) < 1e-6 and (ops["time_ms"] > 0).all()


def test_monitor_samples_a_busy_gpu():
    torch = pytest.importorskip("torch")
    from stages.gpu.monitor import Monitor

    a = torch.randn(4096, 4096, device="cuda")
    with Monitor(0, interval_s=0.02) as mon:
        end = time.time() + 0.5
        while time.time() < end:
            a @ a
        torch.cuda.synchronize()
    assert len(mon.rows) >= 5
    summary = mon.summary()
    assert summary["sm_clock_median_mhz"] > 100 and summary["temp_max_c"] > 0 and summary["power_max_w"] > 0
    assert max(r["util_pct"] for r in mon.rows) > 0


def test_default_run_picks_torch_on_a_gpu(workdir):
    """`python -m pipeline` with no backend: TensorRT is not installed there, so auto must choose torch on CUDA."""
    proc = run_cli(FAST, workdir)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "backend: auto -> torch" in proc.stdout
    row = results.load(workdir / "outputs").runs.iloc[0]
    assert (row.status, row.backend, row.compile_device) == ("ok", "torch", "cuda")
    assert "backend=torch" in row.overrides  # pinned for reproduction

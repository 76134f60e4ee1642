"""CPU tests of the GPU helpers: peak table, FLOP counting, throttle reasons, the per-GPU lock."""
import multiprocessing as mp
import time

import pytest

from stages import flops
from stages.gpu import lock, monitor, peaks


@pytest.mark.parametrize("name, dtype, tflops", [
    ("NVIDIA H100 80GB HBM3", "bf16", 989.4), ("NVIDIA H100 PCIe", "fp16", 756.0), ("NVIDIA H200", "fp8", 1978.9),
    ("NVIDIA A100-SXM4-80GB", "tf32", 156.0), ("NVIDIA L4", "fp16", 121.0), ("NVIDIA L40S", "fp16", 362.05),
    ("NVIDIA GeForce RTX 4090", "bf16", 165.2), ("NVIDIA H100 80GB HBM3", "fp32", 66.9),
])
def test_peak_table(name, dtype, tflops):
    assert peaks.peak_tflops(name, dtype) == tflops


def test_unknown_gpu_or_dtype_has_no_peak():
    assert peaks.peak_tflops("NVIDIA Tesla T4", "fp16") is None
    assert peaks.peak_tflops("NVIDIA A100-SXM4-80GB", "fp8") is None
    assert peaks.peak_tflops(None, "fp16") is None


def test_tiny_cnn_flops_by_hand():
    torch = pytest.importorskip("torch")
    from stages.models import build_builtin

    # 2 FLOPs per multiply-add: conv1 32*32*32 outputs * 3*3*3, conv2 64*16*16 * 32*9, conv3 64*16*16 * 64*9, fc 64*100
    per_sample = 2 * (32 * 32 * 32 * 27 + 64 * 16 * 16 * 288 + 64 * 16 * 16 * 576 + 64 * 100)
    assert flops.count_torch(build_builtin("tiny_cnn"), torch.randn(4, 3, 32, 32)) == 4 * per_sample


def test_efficiency_rows():
    rows = {(r["metric"], r["stat"]): r["value"] for r in flops.efficiency_rows(2_000_000_000_000, 10.0, 400.0, "s")}
    assert rows[("achieved", "tflops")] == pytest.approx(200.0)
    assert rows[("achieved", "pct_of_peak")] == pytest.approx(50.0)
    assert ("achieved", "pct_of_peak") not in {(r["metric"], r["stat"]) for r in flops.efficiency_rows(1, 1.0, None, "")}


def test_throttle_reasons():
    assert monitor.reason_names(0x1 | 0x4 | 0x40) == ["gpu_idle", "sw_power_cap", "hw_thermal_slowdown"]
    assert {"sw_power_cap", "hw_thermal_slowdown"} <= monitor.THROTTLING and "gpu_idle" not in monitor.THROTTLING


def _hold(path_dir, seconds, queue):
    import os

    os.environ[lock.LOCK_DIR_ENV] = path_dir
    with lock.exclusive(0):
        queue.put(("in", time.monotonic()))
        time.sleep(seconds)
        queue.put(("out", time.monotonic()))


def test_measurements_on_one_gpu_never_overlap(tmp_path):
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_hold, args=(str(tmp_path), 0.5, queue)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    events = sorted((queue.get(timeout=5) for _ in range(4)), key=lambda e: e[1])
    assert [e[0] for e in events] == ["in", "out", "in", "out"]

"""CPU tests of the GPU helpers: peak table, FLOP counting, throttle reasons, the per-GPU lock."""
import multiprocessing as mp
import time
from types import SimpleNamespace

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
    assert flops.count_torch(build_builtin("tiny_cnn"), (torch.randn(4, 3, 32, 32),)) == 4 * per_sample


def test_efficiency_rows():
    rows = {(r["metric"], r["stat"]): r["value"] for r in flops.efficiency_rows(2_000_000_000_000, 10.0, 400.0, "s")}
    assert rows[("achieved", "tflops")] == pytest.approx(200.0)
    assert rows[("achieved", "pct_of_peak")] == pytest.approx(50.0)
    without_peak = {(r["metric"], r["stat"]) for r in flops.efficiency_rows(1, 1.0, None, "")}
    assert ("achieved", "pct_of_peak") not in without_peak


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


def test_measurement_to_stage_result():
    from stages.gpu import harness, measured

    class FakeMonitor:
        rows = [{"t_s": 0.0, "sm_clock_mhz": 1980.0, "mem_clock_mhz": 2619.0, "power_w": 300.0, "temp_c": 50.0,
                 "util_pct": 100.0, "throttle": ""}]

        def summary(self):
            return {"sm_clock_median_mhz": 1980.0, "throttled": False}

    times = {"gpu_compute": [2.0, 2.0, 2.0, 2.0], "enqueue": [0.1] * 4, "latency": [2.0] * 4}
    m = harness.Measurement([harness.Trial(times, 8.0), harness.Trial(times, 8.0)], 3, True, None, 1, "spin", False)
    r = measured.stage_result(m, FakeMonitor(), 8, flops=2_000_000_000, gpu="NVIDIA H100 80GB HBM3", dtype="fp16",
                              info={"aux_streams": 2})
    s = {(row["metric"], row["stat"]): row["value"] for row in r.tables["summary"]}
    assert s[("gpu_compute", "median")] == 2.0 and s[("throughput", "qps")] == pytest.approx(8 / 16e-3)
    assert s[("throughput", "samples_per_s")] == pytest.approx(8 * 8 / 16e-3)
    assert s[("achieved", "tflops")] == pytest.approx(1.0)               # 2 GFLOP in 2 ms
    assert s[("achieved", "pct_of_peak")] == pytest.approx(100 / 989.4)
    assert s[("gpu_compute", "trial_spread")] == 0.0
    assert r.info["iterations"] == 8 and r.info["trials"] == 2 and r.info["cuda_graph"] is True
    assert r.info["aux_streams"] == 2 and r.info["sm_clock_median_mhz"] == 1980.0
    assert r.tables["gpu"] == FakeMonitor.rows and len(r.tables["samples"]["value_ms"]) == 24


def test_harness_settings_from_benchmark_params():
    from stages.gpu import harness

    params = dict(warmup_ms=5, duration_s=1.5, min_iterations=7, trials=2, cuda_graph=False, sync="blocking",
                  data_transfers=True, streams=3, batch_size=4, seed=0)
    assert harness.Settings.from_params(params) == harness.Settings(5, 1.5, 7, 2, False, "blocking", True)


# ------------------------------------------------------------------------------------------- CUDA graph capture

ERR = "cudaErrorStreamCaptureInvalidated"


class Handle:
    """A cuda-python handle: int() gives its address (0 for a null handle)."""

    def __init__(self, name, address=None):
        self.name, self.address = name, address if address is not None else id(self)

    def __int__(self):
        return self.address

    def __repr__(self):
        return f"<{self.name}>"


class FakeRuntime:
    """cuda-python's runtime API as a recorder: every call succeeds with a fresh handle unless `results` says
    otherwise (name -> a tuple, or a function of the call's arguments returning one)."""
    cudaError_t = SimpleNamespace(cudaSuccess="cudaSuccess", cudaErrorNotReady="cudaErrorNotReady")
    cudaStreamCaptureMode = SimpleNamespace(cudaStreamCaptureModeThreadLocal="thread-local")
    cudaStreamCaptureStatus = SimpleNamespace(cudaStreamCaptureStatusNone="none",
                                              cudaStreamCaptureStatusActive="active")
    cudaMemcpyKind = SimpleNamespace(cudaMemcpyHostToDevice="H2D", cudaMemcpyDeviceToHost="D2H")
    cudaStreamNonBlocking, cudaEventDefault, cudaEventBlockingSync = 1, 0, 1

    def __init__(self, **results):
        self.results, self.calls = results, []

    def __getattr__(self, name):
        if not name.startswith("cuda"):
            raise AttributeError(name)

        def api(*args):
            self.calls.append((name, args))
            result = self.results.get(name)
            if result is None:
                return "cudaSuccess", Handle(name)
            return result(*args) if callable(result) else result
        return api

    def called(self, name):
        return [args for n, args in self.calls if n == name]


def error(name=ERR):
    return SimpleNamespace(name=name)


@pytest.fixture
def fake_rt(monkeypatch):
    from stages.gpu import cuda, harness

    def install(**results):
        fake = FakeRuntime(**results)
        monkeypatch.setattr(cuda, "rt", lambda: fake)    # what cuda.call uses
        monkeypatch.setattr(harness, "rt", lambda: fake)  # the harness's own reference
        return fake
    return install


def test_a_failed_enqueue_under_capture_keeps_its_error_and_frees_the_partial_graph(fake_rt):
    from stages.gpu import harness

    partial = Handle("partial graph")
    fake = fake_rt(cudaStreamEndCapture=(error(), partial))  # EndCapture fails too, as an invalidated capture does

    def enqueue(stream):
        raise RuntimeError("execute_async_v3 refused the capture")
    with pytest.raises(RuntimeError, match="execute_async_v3 refused the capture"):
        harness.capture(Handle("stream"), enqueue)
    assert fake.called("cudaGraphDestroy") == [(partial,)]
    assert not fake.called("cudaGraphInstantiate")


def test_a_failed_end_of_capture_is_the_error_and_its_graph_is_freed(fake_rt):
    from stages.gpu import harness
    from stages.gpu.cuda import CudaError

    partial = Handle("partial graph")
    fake = fake_rt(cudaStreamEndCapture=(error(), partial))
    with pytest.raises(CudaError, match=f"cudaStreamEndCapture: {ERR}"):
        harness.capture(Handle("stream"), lambda stream: None)
    assert fake.called("cudaGraphDestroy") == [(partial,)]


def test_a_captured_graph_is_destroyed_once_instantiated(fake_rt):
    from stages.gpu import harness
    from stages.gpu.cuda import CudaError

    graph, exe = Handle("graph"), Handle("exec")
    fake = fake_rt(cudaStreamEndCapture=("cudaSuccess", graph), cudaGraphInstantiate=("cudaSuccess", exe))
    assert harness.capture(Handle("stream"), lambda stream: None) is exe
    assert fake.called("cudaGraphInstantiate") == [(graph, 0)] and fake.called("cudaGraphDestroy") == [(graph,)]
    # instantiation fails and so does the clean-up: the error raised is instantiation's
    fake = fake_rt(cudaStreamEndCapture=("cudaSuccess", graph), cudaGraphInstantiate=(error("cudaErrorNotSupported"),),
                   cudaGraphDestroy=(error("cudaErrorInvalidValue"),))
    with pytest.raises(CudaError, match="cudaGraphInstantiate: cudaErrorNotSupported"):
        harness.capture(Handle("stream"), lambda stream: None)
    assert fake.called("cudaGraphDestroy") == [(graph,)]


class FailsUnderCapture:
    """A workload whose first enqueue works and whose enqueue inside the capture fails."""

    def __init__(self):
        self.enqueues = 0

    def enqueue(self, stream):
        self.enqueues += 1
        if self.enqueues == 2:
            raise RuntimeError("IExecutionContext.execute_async_v3 returned False")

    def buffers(self):
        return [], []


def test_lane_note_names_the_original_capture_error(fake_rt):
    from stages.gpu import harness

    partial = Handle("partial graph")
    fake = fake_rt(cudaStreamEndCapture=(error(), partial), cudaStreamIsCapturing=("cudaSuccess", "none"))
    workload = FailsUnderCapture()
    lane = harness._Lane(workload, harness.Settings(cuda_graph=True))
    note = lane.prepare()
    assert "execute_async_v3 returned False" in note and ERR not in note
    assert note.startswith("CUDA graph capture failed, plain enqueue used: RuntimeError")
    assert fake.called("cudaGraphDestroy") == [(partial,)]
    assert lane.launch == workload.enqueue and lane.graph_exec is None
    lane.close()


def test_lane_ends_a_workloads_own_failed_capture_and_frees_its_graph(fake_rt):
    from stages.gpu import harness

    partial = Handle("partial graph")
    fake = fake_rt(cudaStreamEndCapture=(error(), partial), cudaStreamIsCapturing=("cudaSuccess", "active"))

    class OwnCapture(FailsUnderCapture):  # like torch: the workload captures the stream itself
        def capture(self, stream):
            harness.rt().cudaStreamBeginCapture(stream, "thread-local")
            raise RuntimeError("torch.cuda.graph: operation not permitted when stream is capturing")
    lane = harness._Lane(OwnCapture(), harness.Settings(cuda_graph=True))
    note = lane.prepare()
    assert "operation not permitted when stream is capturing" in note
    assert len(fake.called("cudaStreamEndCapture")) == 1 and fake.called("cudaGraphDestroy") == [(partial,)]
    assert fake.called("cudaGetLastError")  # the sticky capture error is cleared
    lane.close()

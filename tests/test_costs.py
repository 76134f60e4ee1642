"""Costs beyond latency on CPU, with fake NVML and fake measurements: the arithmetic, the rows, the monitor's timed
span, the harness hooks, TensorRT's memory rows and the report's costs section."""
from __future__ import annotations

import sys
import time
from types import SimpleNamespace

import numpy as np
import pytest

from stages.gpu import costs, harness, measured, monitor

# ------------------------------------------------------------------------------------------------ arithmetic


def by_key(rows):
    return {(r["metric"], r["stat"]): (r["value"], r["unit"]) for r in rows}


def test_energy_rows():
    rows = by_key(costs.energy_rows(energy_j=600.0, span_s=2.0, inferences=300, batch_size=8))
    assert rows[("energy", "total")] == (600.0, "J")
    assert rows[("energy", "per_inference")] == (pytest.approx(2000.0), "mJ")     # 600 J / 300 calls
    assert rows[("energy", "per_sample")] == (pytest.approx(250.0), "mJ")         # / 2400 samples
    assert rows[("energy", "inferences_per_joule")] == (pytest.approx(0.5), "1/J")
    assert rows[("energy", "samples_per_joule")] == (pytest.approx(4.0), "1/J")
    assert rows[("power", "mean_timed")] == (pytest.approx(300.0), "W")
    assert costs.energy_rows(0.0, 2.0, 300, 8) == [] and costs.energy_rows(5.0, 2.0, 0, 8) == []


def test_integrate_power():
    flat = [(t / 10, 300.0) for t in range(0, 31)]
    assert costs.integrate_power(flat, 0.5, 2.5) == pytest.approx(600.0)
    ramp = [(0.0, 100.0), (1.0, 200.0), (2.0, 300.0)]
    assert costs.integrate_power(ramp, 0.0, 2.0) == pytest.approx(400.0)          # trapezoids: 150 + 250
    # no sample inside: the nearest one on either side holds the power
    assert costs.integrate_power([(0.0, 100.0), (10.0, 500.0)], 4.0, 6.0) == pytest.approx(2 * 300.0)
    assert costs.integrate_power([(0.0, 100.0)], 1.0, 3.0) == pytest.approx(200.0)
    assert costs.integrate_power([], 0.0, 1.0) is None and costs.integrate_power(flat, 2.0, 1.0) is None


def test_memory_and_artifact_rows(tmp_path):
    assert costs.memory_row("peak_timed", 3 * 2**20) == {"metric": "gpu_memory", "stat": "peak_timed", "value": 3.0,
                                                           "unit": "MiB"}
    model = tmp_path / "model.onnx"
    model.write_bytes(b"x" * 1000)
    (tmp_path / "model.onnx.data").write_bytes(b"y" * 24)  # external data beside an export
    (tmp_path / "other.json").write_bytes(b"z" * 50)
    assert costs.file_bytes(model) == 1024
    assert costs.artifact_row("onnx_export", 2**19)["value"] == 0.5
    memory = costs.tensorrt_memory(device_memory_bytes=100, contexts=2, io_bytes=30, engine_bytes=1000)
    assert memory == {"engine_activations": 200, "io_buffers": 30, "weights": 1000, "peak_timed": 1230}


def test_tensorrt_memory_rows(tmp_path):
    from stages.tensorrt import opened

    engine, export = tmp_path / "engine.plan", tmp_path / "model.onnx"
    engine.write_bytes(b"e" * 2**20)
    export.write_bytes(b"o" * 2**19)
    rows, info = opened.memory_rows(2**21, 2, 2**20, engine, export)
    got = by_key(rows)
    assert got[("gpu_memory", "engine_activations")][0] == 4.0       # 2 MiB per context, 2 contexts
    assert got[("gpu_memory", "peak_timed")][0] == 1 + 4 + 1          # weights (engine) + activations + I/O
    assert got[("artifact", "engine")][0] == 1.0 and got[("artifact", "onnx_export")][0] == 0.5
    assert info["peak_memory_mib"] == 6.0 and "engine weights" in info["memory_method"]


# ------------------------------------------------------------------------------------------------ fake NVML


class FakeNVML:
    """pynvml's calls the monitor makes, with a power draw and an energy counter that advance with time."""
    NVML_CLOCK_SM, NVML_CLOCK_MEM, NVML_TEMPERATURE_GPU = 0, 1, 0

    def __init__(self, watts=250.0, energy=True, cap_mw=700_000, mask=0):
        self.watts, self.energy, self.cap_mw, self.mask = watts, energy, cap_mw, mask
        self.t0 = time.perf_counter()

    def nvmlInit(self):
        pass

    def nvmlShutdown(self):
        pass

    def nvmlDeviceGetHandleByUUID(self, uuid):
        return "gpu0"

    nvmlDeviceGetHandleByIndex = nvmlDeviceGetHandleByUUID

    def nvmlDeviceGetClockInfo(self, h, kind):
        return 1980 if kind == self.NVML_CLOCK_SM else 2619

    def nvmlDeviceGetPowerUsage(self, h):
        return int(self.watts * 1000)

    def nvmlDeviceGetTemperature(self, h, kind):
        return 55

    def nvmlDeviceGetUtilizationRates(self, h):
        return SimpleNamespace(gpu=100)

    def nvmlDeviceGetCurrentClocksEventReasons(self, h):
        return self.mask

    def nvmlDeviceGetEnforcedPowerLimit(self, h):
        if self.cap_mw is None:
            raise RuntimeError("NVML_ERROR_NOT_SUPPORTED")
        return self.cap_mw

    def nvmlDeviceGetTotalEnergyConsumption(self, h):
        if not self.energy:
            raise RuntimeError("NVML_ERROR_NOT_SUPPORTED")
        return int((time.perf_counter() - self.t0) * self.watts * 1000)  # mJ: constant power since "boot"


@pytest.fixture
def fake_nvml(monkeypatch):
    def install(**kw):
        fake = FakeNVML(**kw)
        monkeypatch.setitem(sys.modules, "pynvml", fake)
        monkeypatch.setattr(monitor.identity, "cuda_uuid", lambda index=0: None)
        return fake
    return install


def timed(mon, seconds=0.3):
    mon.timed_start()
    time.sleep(seconds)
    mon.timed_end()


@pytest.mark.parametrize("counter", [True, False])
def test_monitor_energy_of_the_timed_span(fake_nvml, counter):
    fake_nvml(watts=250.0, energy=counter, mask=0x4)  # sw_power_cap while timing
    with monitor.Monitor(0, interval_s=0.02) as mon:
        time.sleep(0.1)           # warm-up: not in the span
        timed(mon, 0.3)
        time.sleep(0.1)
    spent = mon.energy()
    assert spent["span_s"] == pytest.approx(0.3, abs=0.08)
    assert spent["energy_j"] == pytest.approx(250.0 * spent["span_s"], rel=0.1)
    assert spent["method"] == ("nvml total energy counter" if counter else "integrated power samples")
    assert mon.power_cap_w == 700.0 and mon.summary()["power_cap_w"] == 700.0
    assert mon.timed_throttle_reasons() == "sw_power_cap"


def test_monitor_without_a_span_or_a_power_cap(fake_nvml):
    fake_nvml(cap_mw=None)
    with monitor.Monitor(0, interval_s=0.02) as mon:
        time.sleep(0.05)
    assert mon.energy() is None and mon.timed_throttle_reasons() is None
    assert mon.power_cap_w is None and "power_cap_w" not in mon.summary()


class FakeMonitor:
    rows = [{"t_s": 0.0, "sm_clock_mhz": 1980.0, "power_w": 300.0, "temp_c": 50.0, "throttle": ""}]
    power_cap_w = 700.0

    def summary(self):
        return {"sm_clock_median_mhz": 1980.0, "throttled": False, "power_cap_w": self.power_cap_w}

    def energy(self):
        return {"energy_j": 12.0, "span_s": 0.04, "method": "nvml total energy counter"}

    def timed_throttle_reasons(self):
        return None


def test_measurement_rows_carry_energy_power_and_the_backends_rows():
    times = {"gpu_compute": [2.0] * 10, "enqueue": [0.1] * 10, "latency": [2.0] * 10}
    m = harness.Measurement([harness.Trial(times, 20.0), harness.Trial(times, 20.0)], 3, True, None, 1, "spin", False)
    extra = [costs.memory_row("peak_timed", 2**30)]
    r = measured.stage_result(m, FakeMonitor(), 4, rows=extra)
    s = by_key(r.tables["summary"])
    assert s[("energy", "per_inference")][0] == pytest.approx(12.0 / 20 * 1e3)   # 20 inferences over both trials
    assert s[("energy", "per_sample")][0] == pytest.approx(12.0 / 80 * 1e3)
    assert s[("power", "cap")] == (700.0, "W") and s[("power", "mean_timed")][0] == pytest.approx(300.0)
    assert s[("gpu_memory", "peak_timed")] == (1024.0, "MiB")
    assert r.info["energy_method"] == "nvml total energy counter" and r.info["power_cap_w"] == 700.0


def test_harness_hooks_bracket_the_timed_trials_only(monkeypatch):
    events = []

    class Lane:
        def __init__(self, workload, settings):
            pass

        def prepare(self):
            events.append("prepare")

        def close(self):
            events.append("close")

    class Hook:
        def __init__(self, name):
            self.name = name

        def timed_start(self):
            events.append(f"{self.name} start")

        def timed_end(self):
            events.append(f"{self.name} end")

    monkeypatch.setattr(harness, "_Lane", Lane)
    monkeypatch.setattr(harness, "_warm_up", lambda lanes, s: events.append("warm-up") or 1)
    monkeypatch.setattr(harness, "_timed_loop", lambda lanes, s, rule: events.append("trial") or harness.Trial({}, 1.0))
    harness.run([object()], harness.Settings(trials=2), hooks=(Hook("a"), Hook("b")))
    assert events == ["prepare", "warm-up", "a start", "b start", "trial", "trial", "b end", "a end", "close"]


def test_torch_peak_memory_hook_reads_the_allocator_and_its_graph_pools(monkeypatch):
    torch = pytest.importorskip("torch")
    from stages.torch_backend.opened import PeakMemory

    segments = [{"total_size": 6 << 20, "segment_pool_id": (0, 0)}, {"total_size": 2 << 20, "segment_pool_id": (1, 3)}]
    for name, value in {"synchronize": None, "reset_peak_memory_stats": None, "max_memory_allocated": 3 << 20,
                        "max_memory_reserved": 8 << 20, "memory_snapshot": segments}.items():
        monkeypatch.setattr(torch.cuda, name, lambda value=value: value)
    hook = PeakMemory()
    assert hook.figures is None
    hook.timed_start()
    hook.timed_end()
    assert hook.figures == {"allocated": 3 << 20, "reserved": 8 << 20, "graph_pools": 2 << 20}


# ------------------------------------------------------------------------------------------------ holding up


def test_energy_per_inference_agrees_with_power_times_latency_when_the_iterations_fill_the_span():
    # 1000 iterations of 2 ms back to back: a 2 s span; 700 J -> 350 W, 0.7 J per inference = 350 W x 2 ms
    ok = costs.energy_check(energy_j=700.0, span_s=2.0, inferences=1000, mean_latency_ms=2.0)
    assert ok["energy_jws_ratio"] == pytest.approx(1.0) and ok["energy_jws_ok"] and "energy_jws" not in ok
    assert costs.energy_check(700.0, 2.0, 1000, 2.0 * 1.04)["energy_jws_ok"]  # within 5 %
    # the case: 8.64 J per inference beside an 11.74 ms latency: the span holds idle gaps
    gaps = costs.energy_check(energy_j=8.64 * 100, span_s=1.5, inferences=100, mean_latency_ms=11.74)
    assert not gaps["energy_jws_ok"] and gaps["energy_jws_ratio"] == pytest.approx(1.5 / (100 * 0.01174))
    assert "idle gaps" in gaps["energy_jws"] and "+27.8 %" in gaps["energy_jws"]
    # two streams: two inferences in flight, each 4 ms long, 1000 of them in 2 s
    assert costs.energy_check(700.0, 2.0, 1000, 4.0, streams=2)["energy_jws_ok"]
    assert "overlapping" in costs.energy_check(700.0, 2.0, 1000, 4.0, streams=1)["energy_jws"]
    assert costs.energy_check(0.0, 2.0, 1000, 2.0) == {} and costs.energy_check(700.0, 2.0, 1000, 0.0) == {}


def test_energy_rows_carry_the_mean_latency_of_the_span():
    rows = by_key(costs.energy_rows(700.0, 2.0, 1000, 4, mean_latency_ms=2.0))
    assert rows[("latency", "mean_timed")] == (2.0, "ms") and rows[("power", "mean_timed")] == (350.0, "W")
    assert rows[("energy", "per_inference")][0] == pytest.approx(rows[("power", "mean_timed")][0] * 2.0)  # mJ
    assert ("latency", "mean_timed") not in by_key(costs.energy_rows(700.0, 2.0, 1000, 4))


def test_graph_pool_bytes_counts_private_pools_only():
    segments = [{"total_size": 100, "segment_pool_id": (0, 0)}, {"total_size": 30, "segment_pool_id": (1, 0)},
                {"total_size": 7, "segment_pool_id": [2, 5]}, {"total_size": 50}]
    assert costs.graph_pool_bytes(segments) == 37 and costs.graph_pool_bytes([]) == 0


def test_nvml_used_prefers_this_process_then_the_device():
    procs = [SimpleNamespace(pid=11, usedGpuMemory=500), SimpleNamespace(pid=12, usedGpuMemory=900)]
    assert costs.nvml_used(procs, 12, 4000) == (900, "process")
    assert costs.nvml_used(procs, 13, 4000) == (4000, "device")  # not listed: another PID namespace
    assert costs.nvml_used([SimpleNamespace(pid=13, usedGpuMemory=None)], 13, 4000) == (4000, "device")
    assert costs.nvml_used([], 13, None) == (None, None)


def test_peak_memory_counts_graph_pools_and_is_cross_checked_with_nvml():
    mib = 1 << 20
    # the case: allocated 684 MiB, but the graph's pool holds the activations: reserved 1500 MiB
    rows, info = costs.peak_memory(684 * mib, 1500 * mib, 800 * mib, 2000 * mib, "process")
    got = {r["stat"]: (r["value"], r["counts"]) for r in rows}
    assert got["peak_timed"][0] == 1500 and "CUDA graph pools" in got["peak_timed"][1]
    assert got["peak_allocated_timed"][0] == 684 and got["graph_pools"][0] == 800
    assert got["nvml_used_timed"] == (2000, costs.COUNTS["process"])
    assert info == {"peak_memory_mib": 1500, "memory_outside_torch_mib": 500, "memory_check": "ok"}
    _, bad = costs.peak_memory(684 * mib, 1500 * mib, 0, 1000 * mib, "device")
    assert bad["memory_check"].startswith("NVML (device) sees 1000 MiB, less than torch's reserved 1500 MiB")
    only_nvml, none = costs.peak_memory(None, None, None, 2000 * mib, "device")
    assert [r["stat"] for r in only_nvml] == ["nvml_used_timed"] and none == {}  # TensorRT: nothing to check against


def test_measurement_checks_joules_and_memory(monkeypatch):
    times = {"gpu_compute": [2.0] * 10, "enqueue": [0.1] * 10, "latency": [2.0] * 10}
    m = harness.Measurement([harness.Trial(times, 20.0), harness.Trial(times, 20.0)], 3, True, None, 1, "spin", False)
    mon = FakeMonitor()  # 12 J over 0.04 s: 300 W; 20 inferences of 2 ms -> 0.6 J each = 300 W x 2 ms
    mon.memory_used = (3 << 30, "process")
    r = measured.stage_result(m, mon, 4, memory={"allocated": 1 << 30, "reserved": 2 << 30, "graph_pools": 1 << 29})
    s = by_key(r.tables["summary"])
    assert s[("latency", "mean_timed")] == (2.0, "ms") and r.info["energy_jws_ok"] is True
    assert s[("gpu_memory", "peak_timed")] == (2048.0, "MiB") and s[("gpu_memory", "nvml_used_timed")][0] == 3072
    assert r.info["memory_check"] == "ok" and r.info["memory_outside_torch_mib"] == 1024


def test_memory_rows_with_what_they_count_are_written_and_read_back(tmp_path):
    import pandas as pd

    from pipeline import results

    rows, _ = costs.peak_memory(1 << 20, 2 << 20, 0, 3 << 20, "process")
    results.write_tables(tmp_path / "0", {"runs": [{"run_id": "r", "status": "ok"}],
                                          "summary": [{"run_id": "r", **r} for r in rows]
                                          + [{"run_id": "r", **costs.row("latency", "median", 1.0, "ms")}]})
    summary = results.load(tmp_path).summary.set_index("stat")
    assert summary.loc["nvml_used_timed", "counts"] == costs.COUNTS["process"]
    assert pd.isna(summary.loc["median", "counts"])  # a figure whose metric says it all: none


# ------------------------------------------------------------------------------------------------ the report


def write_cost_job(root, job, precision, status="ok", reason=None, rows=(), **columns) -> str:
    """A job's tables as pipeline.run.job writes them, with cost rows in `summary` and cost columns in `runs`."""
    from pipeline import results

    run_id = f"run-{job}-{precision}"
    runs = {"run_id": run_id, "sweep": "gpu_precision", "job": job, "status": status, "error": reason,
            "backend": "torch", "model": "vit_b16", "precision": precision, "batch_size": 128,
            "overrides": f"backend.point={precision}", **columns}
    tables = {"runs": [runs]}
    if status == "ok":
        latency = [{"metric": "latency", "stat": k, "value": v, "unit": "ms"}
                   for k, v in {"median": 2.0 - job * 0.5, "p90": 2.2, "p99": 2.5}.items()]
        tables["summary"] = [{"run_id": run_id, **r} for r in [*latency, *rows]]
        tables["samples"] = [{"run_id": run_id, "trial": 0, "iteration": i, "metric": "latency", "value_ms": 2.0}
                             for i in range(20)]
    results.write_tables(root / str(job), tables)
    return run_id


def test_report_costs_section(tmp_path):
    from pipeline import results
    from pipeline.analysis import report
    from tests.test_report import check_png

    for job, precision, mem, energy in [(0, "bf16", 900.0, 40.0), (1, "fp8", 600.0, 25.0)]:
        rows = [costs.memory_row("peak_timed", mem * 2**20), costs.memory_row("peak_build", 2 * mem * 2**20),
                costs.artifact_row("weights_file", 330 * 2**20),
                *costs.energy_rows(energy * 0.1, 0.5, 100, 1), costs.row("power", "cap", 700.0, "W")]
        write_cost_job(tmp_path, job, precision, rows=rows, compile_seconds=12.5 + job, model_seconds=1.0,
                       compile_import_seconds=30.0, model_import_seconds=2.0, benchmark_seconds=4.0,
                       benchmark_timed_throttle_reasons="sw_power_cap" if job else None,
                       compile_first_call_s=11.0, compile_inductor_cache="miss")
    write_cost_job(tmp_path, 2, "int8", "unsupported", "compile: no torchao", compile_seconds=0.1)
    index = report.build_report(tmp_path)
    page = index.read_text()
    section = page[page.index("Costs beyond latency"):page.index("<h2>All runs")]
    for header in ("peak GPU memory, timed (MiB)", "energy / inference (mJ)", "inferences / J", "power cap (W)",
                   "build time (s)", "throttled while timing", "compile cache"):
        assert header in section, header
    assert "900.0" in section and "600.0" in section and "sw_power_cap" in section
    assert "13.5" in section  # build time: model + compile seconds, not the benchmark's, nor their imports
    assert "compile: no torchao" not in section and "unsupported" in section  # listed, with its status
    assert "1 point not shown: unsupported: int8" in section
    check_png(tmp_path / "report" / "costs.png")
    loaded = results.load(tmp_path)
    view = report.cost_view(report.run_view(loaded)[0], loaded.summary)
    energy = view["energy / sample (mJ)"]
    assert list(energy.round(3)[:2]) == [40.0, 25.0] and np.isnan(energy[2])


def test_report_without_costs_says_so(tmp_path):
    from pipeline.analysis import report
    from tests.test_report import write_job

    write_job(tmp_path, 0, "fp32")
    page = report.build_report(tmp_path).read_text()
    assert "No cost figures" in page and "costs.png" not in page

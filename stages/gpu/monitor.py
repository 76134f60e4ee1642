"""Samples the GPU with NVML while a measurement runs, so a throttled or cooling-down run shows in the tables.

It also marks the timed span (a harness hook: `timed_start` / `timed_end`) and says what the GPU spent in it:
NVML's total-energy counter (nvmlDeviceGetTotalEnergyConsumption, mJ since the driver loaded) read at both ends,
or, on a GPU without that counter, the sampled power integrated over the span; beside it the enforced power limit
(nvmlDeviceGetEnforcedPowerLimit) and the throttle reasons seen while timing.
"""
from __future__ import annotations

import os
import statistics
import threading
import time

from stages.gpu import costs, identity

# NVML clocks-event (throttle) reason bits; stable across NVML versions.
REASONS = {
    0x1: "gpu_idle", 0x2: "applications_clocks_setting", 0x4: "sw_power_cap", 0x8: "hw_slowdown",
    0x10: "sync_boost", 0x20: "sw_thermal_slowdown", 0x40: "hw_thermal_slowdown", 0x80: "hw_power_brake_slowdown",
    0x100: "display_clock_setting",
}
# The reasons that mean the clock was held down while work ran (idle and app-clock settings are not).
THROTTLING = {"sw_power_cap", "hw_slowdown", "sw_thermal_slowdown", "hw_thermal_slowdown", "hw_power_brake_slowdown"}


def reason_names(mask: int) -> list[str]:
    return [name for bit, name in REASONS.items() if mask & bit]


class Monitor:
    """`with Monitor(cuda_index) as m: ...` then `m.rows` (the `gpu` table) and `m.summary()` (runs columns)."""

    def __init__(self, index: int = 0, interval_s: float = 0.05):
        self.index, self.interval_s = index, interval_s
        self.rows: list[dict] = []
        self.error: str | None = None
        self.power_cap_w: float | None = None
        self.span: dict = {}  # t0/t1 (s since start), e0/e1 (the energy counter, mJ, None where unsupported)
        self.memory_used: tuple[int | None, str | None] = (None, None)  # at timed_end: (bytes, process | device)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "Monitor":
        import pynvml

        pynvml.nvmlInit()
        self._nvml = pynvml
        self._handle = identity.nvml_handle(pynvml, self.index)  # the CUDA device's GPU, not NVML's n-th
        try:
            self.power_cap_w = pynvml.nvmlDeviceGetEnforcedPowerLimit(self._handle) / 1000.0
        except Exception:  # noqa: BLE001 - not every GPU reports it
            self.power_cap_w = None
        self._t0 = time.perf_counter()
        self._thread = threading.Thread(target=self._loop, name="gpu-monitor", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()
        self._sample()  # one reading at the end, so even a short measurement has two
        self._nvml.nvmlShutdown()

    def timed_start(self) -> None:
        """The harness's hook: the timed loops begin now."""
        self._sample()
        self.span = {"t0": time.perf_counter() - self._t0, "e0": self._energy_mj()}

    def timed_end(self) -> None:
        """The harness's hook: the timed loops are over (every iteration collected)."""
        self.span.update(t1=time.perf_counter() - self._t0, e1=self._energy_mj())
        self.memory_used = self._memory_used()
        self._sample()

    def _memory_used(self) -> tuple[int | None, str | None]:
        nv, h = self._nvml, self._handle
        try:
            processes = nv.nvmlDeviceGetComputeRunningProcesses(h)
        except Exception:  # noqa: BLE001 - not every driver lists them
            processes = []
        try:
            device = nv.nvmlDeviceGetMemoryInfo(h).used
        except Exception:  # noqa: BLE001
            device = None
        return costs.nvml_used(processes, os.getpid(), device)

    def _energy_mj(self) -> float | None:
        try:
            return float(self._nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle))
        except Exception:  # noqa: BLE001 - Volta and newer have it; a GPU without it falls back to power samples
            return None

    def energy(self) -> dict | None:
        """The timed span's energy: {energy_j, span_s, method}, or None when the span was not marked (or nothing
        measured it). The counter is the GPU's whole draw, idle power included: what the work cost."""
        t0, t1 = self.span.get("t0"), self.span.get("t1")
        if t0 is None or t1 is None or t1 <= t0:
            return None
        e0, e1 = self.span.get("e0"), self.span.get("e1")
        if e0 is not None and e1 is not None and e1 > e0:
            return {"energy_j": (e1 - e0) / 1000.0, "span_s": t1 - t0, "method": "nvml total energy counter"}
        joules = costs.integrate_power([(r["t_s"], r.get("power_w")) for r in self.rows], t0, t1)
        if joules is None:
            return None
        return {"energy_j": joules, "span_s": t1 - t0, "method": "integrated power samples"}

    def timed_throttle_reasons(self) -> str | None:
        """The throttle reasons NVML reported while timing (the span), or None."""
        t0, t1 = self.span.get("t0"), self.span.get("t1")
        if t0 is None or t1 is None:
            return None
        seen = {r for row in self.rows if t0 <= row["t_s"] <= t1
                for r in row["throttle"].split(",") if r in THROTTLING}
        return ",".join(sorted(seen)) or None

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval_s)

    def _sample(self) -> None:
        nv, h = self._nvml, self._handle
        try:
            mask = _throttle_mask(nv, h)
            self.rows.append({
                "t_s": time.perf_counter() - self._t0,
                "sm_clock_mhz": float(nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_SM)),
                "mem_clock_mhz": float(nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_MEM)),
                "power_w": nv.nvmlDeviceGetPowerUsage(h) / 1000.0,
                "temp_c": float(nv.nvmlDeviceGetTemperature(h, nv.NVML_TEMPERATURE_GPU)),
                "util_pct": float(nv.nvmlDeviceGetUtilizationRates(h).gpu),
                "throttle": ",".join(reason_names(mask)),
            })
        except Exception as err:  # a sensor this GPU lacks must not break the measurement
            self.error = f"{type(err).__name__}: {err}"

    def summary(self) -> dict:
        cap = {"power_cap_w": self.power_cap_w} if self.power_cap_w else {}
        if not self.rows:
            return {"gpu_samples": 0, "gpu_monitor_error": self.error, **cap}
        reasons = sorted({r for row in self.rows for r in row["throttle"].split(",") if r in THROTTLING})
        return {
            **cap,
            "gpu_samples": len(self.rows),
            "sm_clock_median_mhz": statistics.median(r["sm_clock_mhz"] for r in self.rows),
            "temp_max_c": max(r["temp_c"] for r in self.rows),
            "power_max_w": max(r["power_w"] for r in self.rows),
            "throttled": bool(reasons),
            "throttle_reasons": ",".join(reasons) or None,
        }


def _throttle_mask(nv, handle) -> int:
    getter = getattr(nv, "nvmlDeviceGetCurrentClocksEventReasons", None) or nv.nvmlDeviceGetCurrentClocksThrottleReasons
    return int(getter(handle))

"""Samples the GPU with NVML while a measurement runs, so a throttled or cooling-down run shows in the tables."""
from __future__ import annotations

import statistics
import threading
import time

from stages.gpu import identity

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
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "Monitor":
        import pynvml

        pynvml.nvmlInit()
        self._nvml = pynvml
        self._handle = identity.nvml_handle(pynvml, self.index)  # the CUDA device's GPU, not NVML's n-th
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
        if not self.rows:
            return {"gpu_samples": 0, "gpu_monitor_error": self.error}
        reasons = sorted({r for row in self.rows for r in row["throttle"].split(",") if r in THROTTLING})
        return {
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

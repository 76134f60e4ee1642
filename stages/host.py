"""The host as it matters to results: the CPU's model and the instruction-set extensions that optimized CPU kernels
(ONNX Runtime's ENABLE_ALL layout transforms) are specific to, and the versions of the frameworks installed."""
from __future__ import annotations

import functools
import platform
from pathlib import Path

from stages.api import onnxruntime_version, package_version


@functools.lru_cache(maxsize=1)
def cpu_identity() -> dict[str, str]:
    model, flags = "", ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "model name" and not model:
                model = value.strip()
            elif key == "flags" and not flags:
                flags = " ".join(sorted(f for f in value.split() if f.startswith(("avx", "fma", "amx", "sse4"))))
    except OSError:  # not Linux: the machine name is the best we have
        pass
    return {"cpu": model or platform.machine(), "isa": flags}


def software_versions() -> dict[str, str | None]:
    """The frameworks every backend's results depend on (the `env_*` columns), read without importing them."""
    return {
        "torch": package_version("torch"),
        "onnx": package_version("onnx"),
        "onnxruntime": onnxruntime_version(),
        "modelopt": package_version("nvidia-modelopt"),
        # the builder's bindings only: the lean runtime (a test extra) says nothing about building engines
        "tensorrt": package_version("tensorrt", "tensorrt-cu13-bindings", "tensorrt-cu12-bindings", "tensorrt-cu13",
                                    "tensorrt-cu12"),
    }

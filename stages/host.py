"""The host CPU, as it matters to results: its model, and the instruction-set extensions that optimized CPU
kernels (ONNX Runtime's ENABLE_ALL layout transforms) are specific to."""
from __future__ import annotations

import functools
import platform
from pathlib import Path


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

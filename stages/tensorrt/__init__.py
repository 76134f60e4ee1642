"""TensorRT backend: build an engine with Polygraphy, time it with the cuda-python harness, profile, validate.

`tensorrt` is imported only inside functions, so this package imports on any machine; every stage starts with
`import_trt()`, which turns a missing TensorRT into `Unsupported` with a message that says how to get it.

Naming rule for this package (tests/test_tensorrt_runtime_conformance.py depends on it): a TensorRT object is
always held in a variable or attribute named after its class, `trt` (the module), `trt_runtime`, `engine`,
`ctx`, `engine_inspector`, `dtype`, `builder`, `builder_config`, `timing_cache`. The test scans these modules for
`<name>.<attribute>` and checks every attribute against the real TensorRT bindings, so it follows the code.
"""
from __future__ import annotations

import collections
import functools
import logging
import subprocess
from pathlib import Path

from stages.api import Unsupported

log = logging.getLogger("pipeline")


def import_trt():
    """The `tensorrt` module, or Unsupported saying how to get it and what runs here instead."""
    try:
        import tensorrt as trt
    except (ImportError, OSError) as err:  # OSError: the bindings are there but libnvinfer is not
        raise Unsupported(not_installed_message(f"import tensorrt: {err}")) from err
    return trt


def not_installed_message(detail: str) -> str:
    from stages import availability

    return f"TensorRT is not installed here ({detail}). {availability.how_to_get('tensorrt')}"


@functools.lru_cache(maxsize=1)
def gpu() -> dict:
    """GPU model, compute capability and CUDA versions of CUDA device 0, without crashing where there is none."""
    from stages.gpu.cuda import rt

    r = rt()
    err, count = r.cudaGetDeviceCount()
    if err != r.cudaError_t.cudaSuccess or not count:
        raise Unsupported(f"TensorRT needs an NVIDIA GPU and CUDA sees none here ({getattr(err, 'name', err)})")
    err, prop = r.cudaGetDeviceProperties(0)
    if err != r.cudaError_t.cudaSuccess:
        raise Unsupported(f"cannot read the properties of CUDA device 0 ({getattr(err, 'name', err)})")
    name = prop.name.split(b"\0", 1)[0].decode() if isinstance(prop.name, bytes) else str(prop.name)
    return {"gpu": name, "compute_capability": f"{prop.major}.{prop.minor}",
            "cuda": _cuda_version(r.cudaRuntimeGetVersion()), "cuda_driver": _cuda_version(r.cudaDriverGetVersion())}


def _cuda_version(result) -> str | None:
    err, value = result
    return f"{value // 1000}.{value % 1000 // 10}" if value else None


def environment() -> dict:
    """What an engine (and a timing cache) depends on: TensorRT version, GPU model and compute capability, CUDA.
    TensorRT is checked first, so a machine without it gets Unsupported before anything touches CUDA."""
    trt = import_trt()
    return {"tensorrt": trt.__version__, **gpu()}


def run_logged(cmd: list[str], log_file: Path, label: str, env: dict | None = None) -> tuple[int, str]:
    """Run `cmd`, writing its stdout and stderr to `log_file` and its lines to the debug log.
    Returns the exit status and the last lines (for an error message); trtexec runs this way."""
    tail: collections.deque[str] = collections.deque(maxlen=30)
    with open(log_file, "w") as out, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                                      text=True, errors="replace", env=env) as proc:
        for line in proc.stdout:
            out.write(line)
            tail.append(line.rstrip())
            log.debug("%s: %s", label, line.rstrip())
        status = proc.wait()
    return status, "\n".join(tail)

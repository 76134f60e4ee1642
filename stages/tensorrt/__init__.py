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

from stages.api import Param, Unsupported
from stages.availability import Requires

log = logging.getLogger(__name__)

# The plugin: options (`backend.<key>`, values in conf/backend/tensorrt.yaml), what it needs, how to get it.
BUILD_OPTIONS = {
    "optimization_level": Param(int, min=0, max=5, doc="the builder's optimization level (TensorRT's default 3)"),
    "max_aux_streams": Param(int, min=-1, doc="auxiliary streams; -1 leaves the choice to TensorRT's heuristic"),
    "workspace_mb": Param(int, min=0, doc="workspace pool limit; 0: TensorRT's default (the whole GPU)"),
    "timing_cache": Param(bool, doc="share a timing cache per (GPU, TensorRT, CUDA) across builds"),
}
OPTIONS = BUILD_OPTIONS
REQUIRES = Requires(modules=("tensorrt",), gpu=True)
HOW_TO_GET = ("TensorRT's builder comes from NVIDIA: the NGC container nvcr.io/nvidia/tensorrt (see the Dockerfile), "
              "or `pip install tensorrt --extra-index-url https://pypi.nvidia.com` on a machine with an NVIDIA GPU.")


def import_trt():
    """The `tensorrt` module, or Unsupported saying how to get it and what runs here instead."""
    try:
        import tensorrt as trt
    except (ImportError, OSError) as err:  # OSError: the bindings are there but libnvinfer is not
        raise Unsupported(not_installed_message(f"import tensorrt: {err}")) from err
    return trt


def not_installed_message(detail: str) -> str:
    return f"TensorRT is not installed here ({detail}). {HOW_TO_GET}"


@functools.lru_cache(maxsize=1)
def gpu() -> dict:
    """GPU model, compute capability and CUDA version of CUDA device 0, without crashing where there is none.

    The CUDA here keys engines and timing caches, so it must be the CUDA that TensorRT itself runs on. TensorRT's
    Python module does not say which that is (it sets `__version__` only: NVIDIA/TensorRT
    python/packaging/bindings_wheel/tensorrt/__init__.py), and cuda-bindings' cudaRuntimeGetVersion reports the
    bindings' own runtime, which an upgrade of the bindings changes while every engine stays valid. The CUDA
    runtime that libnvinfer uses comes with the TensorRT build, whose version is already in the key; what can
    change under it on one machine is the driver. So the key takes the driver's CUDA version
    (cudaDriverGetVersion); the bindings' version is recorded apart (cuda_bindings()), not keyed."""
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
            "cuda": _cuda_version(r.cudaDriverGetVersion())}


def cuda_bindings() -> str | None:
    """The CUDA runtime version of cuda-bindings itself: recorded as info, never part of a key (see gpu())."""
    from stages.gpu.cuda import rt

    return _cuda_version(rt().cudaRuntimeGetVersion())


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


def open_runtime(inputs: dict, options: dict, work_dir):
    """The built engine (`inputs`: engine, reference) for the shared benchmark, validate and profile stages."""
    from stages.tensorrt import opened

    return opened.EngineRuntime(inputs["engine"], inputs["reference"])

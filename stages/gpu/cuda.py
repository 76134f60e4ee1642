"""cuda-python's runtime API with errors turned into exceptions. Every call returns (err, *values)."""
from __future__ import annotations

import functools


class CudaError(RuntimeError):
    pass


@functools.lru_cache(maxsize=1)
def rt():
    try:
        from cuda.bindings import runtime  # cuda-bindings >= 12.6.1
    except ImportError:  # older cuda-python
        from cuda import cudart as runtime
    return runtime


def call(name: str, *args):
    """rt().<name>(*args), raising CudaError unless it returned cudaSuccess; returns the value(s) after err."""
    result = getattr(rt(), name)(*args)
    err, values = (result[0], result[1:]) if isinstance(result, tuple) else (result, ())
    if err != rt().cudaError_t.cudaSuccess:
        raise CudaError(f"{name}: {getattr(err, 'name', err)}")
    if not values:
        return None
    return values[0] if len(values) == 1 else values


def is_ready(event) -> bool:
    """cudaEventQuery without raising for the one expected 'error', cudaErrorNotReady."""
    err = rt().cudaEventQuery(event)[0]
    if err == rt().cudaError_t.cudaSuccess:
        return True
    if err == rt().cudaError_t.cudaErrorNotReady:
        return False
    raise CudaError(f"cudaEventQuery: {err.name}")

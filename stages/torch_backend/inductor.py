"""torch.compile's own caches under the pipeline's cache directory, and whether a compile hit them.

Inductor keeps compiled graphs across processes: the FX graph cache (the generated code of a graph), the AOT
autograd cache (the traced forward), and the autotuning results and Triton kernels, all under
TORCHINDUCTOR_CACHE_DIR. Pointing that at `cache.dir/shared/torchinductor` (stages.api.shared_dir) makes a warm re-run
of a compiled point take seconds (dynamo still traces; Inductor and Triton load what they built), and keeps the
compiled code with the rest of the pipeline's cache (moved, shared or deleted with it).
"""
from __future__ import annotations

import os

from stages import api

SHARED = "torchinductor"
ENV = "TORCHINDUCTOR_CACHE_DIR"
# (counter group, counter) -> the runs column it is reported as
COUNTERS = {
    ("inductor", "fxgraph_cache_hit"): "fx_graph_cache_hits",
    ("inductor", "fxgraph_cache_miss"): "fx_graph_cache_misses",
    ("inductor", "fxgraph_cache_bypass"): "fx_graph_cache_bypasses",
    ("aot_autograd", "autograd_cache_hit"): "aot_cache_hits",
    ("aot_autograd", "autograd_cache_miss"): "aot_cache_misses",
}


def use_shared_cache() -> str | None:
    """Point Inductor's caches at the pipeline's shared directory and switch them on; the directory, or None where
    the stage runs outside a job (a benchmark script calling it directly: torch's own default then)."""
    try:
        path = str(api.shared_dir(SHARED).resolve())
    except RuntimeError:
        return os.environ.get(ENV)
    # read by torch._inductor.runtime.cache_dir_utils.cache_dir() at each use; Triton's kernels go below it too
    # (<dir>/triton/<device>) unless the user set TRITON_CACHE_DIR
    os.environ[ENV] = path
    import torch._functorch.config as functorch_config
    import torch._inductor.config as inductor_config

    inductor_config.fx_graph_cache = True
    inductor_config.autotune_local_cache = True
    functorch_config.enable_autograd_cache = True
    return path


def snapshot() -> dict[str, int]:
    from torch._dynamo.utils import counters

    return {column: int(counters[group][name]) for (group, name), column in COUNTERS.items()}


def delta(before: dict[str, int], after: dict[str, int]) -> dict:
    """The cache counters a compile moved, and one word for it: hit (every graph from the cache), miss (none),
    partial, or none (nothing was looked up: eager). A bypassed look-up (a graph the cache cannot hold) is a miss."""
    out = {k: after[k] - before.get(k, 0) for k in after}
    hits, misses = out["fx_graph_cache_hits"], out["fx_graph_cache_misses"] + out["fx_graph_cache_bypasses"]
    out["inductor_cache"] = ("hit" if hits and not misses else "miss" if misses and not hits
                            else "partial" if hits else "none")
    return out

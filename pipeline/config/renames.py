"""Names that recorded configs use and the code no longer has: an explicit map from old to new, so that a run
recorded by an older version still reproduces (`python -m pipeline.reproduce`).

A recorded job keeps its identity: its `config_hash` is computed from the config as recorded, under the old names
(a stage module that no longer imports keeps all its params in the hash, except those it declared keyed=False,
listed here); the job is run from the upgraded config.
"""
from __future__ import annotations

import copy

# A backend's own benchmark / validate / profile stage -> the shared one (stages/runtime.py): the same inputs, the
# params it took (the shared stages take the backend's plugin and options from the runner, and the GPU timing
# settings, which the recorded config holds under `benchmark`).
_SHARED = {"benchmark": "stages.benchmark", "validate": "stages.validate", "profile": "stages.profile"}
MOVED_STAGES = {f"stages.{backend}.{kind}": shared
                for backend in ("onnxruntime", "torch_backend", "tensorrt") for kind, shared in _SHARED.items()}
MOVED_STAGES["stages.trtexec.validate"] = "stages.validate"
# params of a moved stage that are now backend options (handed over by the runner), and of those the ones the old
# stage declared keyed=False (out of its config_hash)
# the shared benchmark's timing settings (stages.gpu.harness.PARAMS), which a recorded config holds under `benchmark`
TIMING = ("warmup_ms", "duration_s", "min_iterations", "trials", "cuda_graph", "sync", "data_transfers", "streams")
NOW_OPTIONS = {"stages.trtexec.validate": ("path", "extra_args")}
# A stage that stays where it was but now takes backend options from the runner (its BACKEND_OPTIONS) instead of
# params its node's YAML wired to them (`optimization_level: ${backend.optimization_level}`): a recorded value
# that the backend's node holds too is dropped from the node, and the hash is unchanged (runner.keyed_dag hashes a
# node with the options its stage takes). One that differs (edited by hand) stays: the runner refuses it by name.
_ORT_BUILD = ("optimization_level", "intra_op_threads", "inter_op_threads", "execution_mode")
_TRT_BUILD = ("optimization_level", "max_aux_streams", "workspace_mb", "timing_cache")
_TORCH = ("channels_last", "device", "quantization", "keep_high_precision")
NOW_BACKEND_OPTIONS = {"stages.onnxruntime.build": _ORT_BUILD,
                       "stages.torch_backend.compile": _TORCH,
                       "stages.torch_backend.build": (*_TORCH, "build"),
                       "stages.tensorrt.build": _TRT_BUILD,
                       "stages.trtexec.build": (*_TRT_BUILD, "path", "extra_args"),
                       "stages.trtexec.benchmark": ("path", "extra_args")}
WAS_UNKEYED = {"stages.trtexec.validate": ("path",)}


def upgrade(config: dict) -> dict:
    """`config` with every moved stage under its new name and the params its new stage takes (not those the
    runner now hands it as backend options)."""
    out = copy.deepcopy(config)
    backend = out.get("backend") if isinstance(out.get("backend"), dict) else {}
    timing = out.get("benchmark") or {}
    for spec in (backend.get("dag") or {}).values():
        old = spec.get("stage") if isinstance(spec, dict) else None
        if old in NOW_BACKEND_OPTIONS and isinstance(spec.get("params"), dict):
            spec["params"] = {k: v for k, v in spec["params"].items()
                              if not (k in NOW_BACKEND_OPTIONS[old] and k in backend and backend[k] == v)}
        if old not in MOVED_STAGES:
            continue
        spec["stage"] = MOVED_STAGES[old]
        params = {k: v for k, v in (spec.get("params") or {}).items() if k not in NOW_OPTIONS.get(old, ())}
        if spec["stage"] == "stages.benchmark":
            params = {**{k: timing[k] for k in TIMING if k in timing}, **params}
        if spec["stage"] == "stages.profile" and "cuda_graph" in timing:
            params.setdefault("cuda_graph", timing["cuda_graph"])
        spec["params"] = params
    return out


def unkeyed(stage: str) -> tuple[str, ...]:
    """The params a stage that no longer imports had declared keyed=False."""
    return WAS_UNKEYED.get(stage, ())

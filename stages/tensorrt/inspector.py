"""TensorRT's engine-inspector JSON (also what `trtexec --exportLayerInfo` writes) into `layers` rows.

Two schemas are in use:
- TensorRT 10.x: `{"Layers": [{"Name", "LayerType", "Inputs": [{"Name", "Location", "Dimensions",
  "Format/Datatype"}], "Outputs": [...], "TacticName", "TacticValue", "StreamId", "Metadata", ...}],
  "Bindings": ["input", "output"]}`.
- TensorRT 11.x: "Bindings" became "I/O Tensors" (objects with an "IOMode" key), and each tensor's
  "Format/Datatype" string was split into "DataType" and "Format" (NVIDIA's migration guide spells it "DataType";
  some tools write "Datatype"). Keys are read case-insensitively, and a tensor without a type key gets its type
  from the words of its "Format" string.
Built with profiling verbosity LAYER_NAMES_ONLY, "Layers" holds bare names; some tools write the list of layers
as the root. With several optimization profiles, layer and tensor names carry " [profile N]" (N >= 1).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Mapping

_PROFILE = re.compile(r"\s*\[profile (\d+)\]")
# With auxiliary streams layers run at the same time: each layer's time holds, their sum is not the inference's.
OVERLAP_NOTE = "per-layer times overlap across auxiliary streams; shares do not add up to the inference time"
# Words in a format/datatype description -> our dtype names. 10.x writes e.g. "Row major linear FP32",
# "Channel major FP16 format where channel % 8 == 0", "Thirty-two wide channel vectorized row major Int8 format.",
# and some releases just "Float" or "Half"; 11.x writes the type alone.
_DTYPE_WORDS = {
    "fp32": "fp32", "float": "fp32", "float32": "fp32", "half": "fp16", "fp16": "fp16", "float16": "fp16",
    "bf16": "bf16", "bfloat16": "bf16", "fp8": "fp8", "e4m3": "fp8", "fp8e4m3": "fp8", "int8": "int8",
    "uint8": "uint8", "int32": "int32", "int64": "int64", "bool": "bool", "int4": "int4", "fp4": "fp4",
    "e8m0": "e8m0",
}


@dataclass(frozen=True)
class LayerInfo:
    name: str                # without the profile suffix
    profile: int             # optimization profile the layer belongs to
    layer_type: str | None = None
    dtype: str | None = None  # of the layer's first output
    tactic: str | None = None
    stream: int | None = None


def split_profile(name: str) -> tuple[str, int]:
    """'conv1 [profile 2]' -> ('conv1', 2); names without the suffix belong to profile 0."""
    match = _PROFILE.search(name)
    if not match:
        return name, 0
    return (name[:match.start()] + name[match.end():]).strip(), int(match.group(1))


def load(info: str | bytes | Mapping | list) -> Any:
    return json.loads(info) if isinstance(info, (str, bytes)) else info


def parse(info: str | bytes | Mapping | list) -> list[LayerInfo]:
    """Every layer of the engine (all profiles), in engine order."""
    data = load(info)
    layers = _keys_lowered(data).get("layers", []) if isinstance(data, Mapping) else data
    out = []
    for layer in layers:
        if isinstance(layer, str):  # LAYER_NAMES_ONLY
            out.append(LayerInfo(*split_profile(layer)))
            continue
        layer = _keys_lowered(layer)
        name, profile = split_profile(str(layer.get("name", "")))
        tensors = list(layer.get("outputs") or [])  # the dtype column is the layer's first output's
        tactic = layer.get("tacticname") or layer.get("tacticvalue")
        stream = layer.get("streamid")
        out.append(LayerInfo(name, profile, layer.get("layertype"), _first_dtype(tensors),
                             str(tactic) if tactic not in (None, "") else None,
                             int(stream) if isinstance(stream, (int, str)) and str(stream).isdigit() else None))
    return out


def uses_aux_streams(layers: list[LayerInfo]) -> bool:
    """Whether any layer runs on an auxiliary stream (StreamId > 0): then layers overlap in time, and per-layer
    times are not additive (trtexec warns that its "Total" may be inaccurate)."""
    return any(layer.stream for layer in layers)


def dtype_of(description: str | None) -> str | None:
    """'Channel major FP16 format where channel % 8 == 0' -> 'fp16'; None when no known type is named
    (e.g. 'N/A due to dynamic shapes')."""
    for word in re.findall(r"[A-Za-z0-9]+", description or ""):
        found = _DTYPE_WORDS.get(word.lower())
        if found:
            return found
    return None


def _first_dtype(tensors: list) -> str | None:
    for tensor in tensors:
        if isinstance(tensor, Mapping):
            tensor = _keys_lowered(tensor)
            found = dtype_of(tensor.get("datatype") or tensor.get("format/datatype") or tensor.get("format"))
            if found:
                return found
    return None


def _keys_lowered(entry: Mapping) -> dict:
    """The keys in lower case: 10.x, 11.x and NVIDIA's documentation do not agree on "Datatype" vs "DataType"."""
    return {str(k).lower(): v for k, v in entry.items()}


def rows(times_ms: Mapping[str, float], layers: list[LayerInfo], source: str, profile: int = 0,
         median_ms: Mapping[str, float | None] | None = None) -> list[dict]:
    """`layers` rows: per-inference time of each timed layer of `profile`, its share of all timed layers, and
    what the inspector says about it. Without timings, one row per layer with time and share left empty.
    `median_ms` (trtexec's --exportProfile has it) goes beside the mean as `median_ms`."""
    info = {layer.name: layer for layer in layers if layer.profile == profile}
    timed, medians = {}, {}
    for raw, ms in times_ms.items():
        name, prof = split_profile(raw)
        if prof == profile:
            # a name timed twice is summed; the sum of two medians is no median
            medians[name] = None if name in timed else (median_ms or {}).get(raw)
            timed[name] = timed.get(name, 0.0) + ms
    total = sum(timed.values())
    names = list(timed) if timed else list(info)
    out = []
    for name in names:
        layer = info.get(name, LayerInfo(name, profile))
        ms = timed.get(name)
        out.append({"layer": name, "layer_type": layer.layer_type, "dtype": layer.dtype, "tactic": layer.tactic,
                    "stream": layer.stream, "time_ms": ms, "median_ms": medians.get(name),
                    "share": ms / total if ms is not None and total else None, "source": source})
    return out


def engine_information(built, ctx) -> str:
    """The inspector JSON of a live engine, with `ctx` attached so dynamic shapes show their actual formats."""
    engine_inspector = built.engine.create_engine_inspector()
    engine_inspector.execution_context = ctx
    return engine_inspector.get_engine_information(built.trt.LayerInformationFormat.JSON)

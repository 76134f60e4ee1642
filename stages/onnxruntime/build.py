"""Build stage for ONNX Runtime: create a CPU session with the configured options and save ORT's optimized
graph as the artifact, with the settings needed to open it again (session.json)."""
from __future__ import annotations

import json
from pathlib import Path

from stages.api import Param, StageResult, Unsupported
from stages.onnxruntime import session

VERSION = "2"
OUTPUTS = ("model",)
CACHED = True
PARAMS = {"precision": Param(str), "tf32": Param(bool)}
# the backend's options it builds with, handed over by the runner (typed in stages/onnxruntime/__init__.py OPTIONS)
BACKEND_OPTIONS = ("optimization_level", "intra_op_threads", "inter_op_threads", "execution_mode")
FILE = "model.onnx"


def environment(params: dict) -> dict:
    return session.environment()


def run(inputs: dict, params: dict, out_dir: Path) -> StageResult:
    _refuse_unsupported(params)
    src = inputs["onnx"]
    settings = {
        "optimization_level": params["optimization_level"],
        "graph_optimization_level": session.LEVELS[params["optimization_level"]],
        "intra_op_threads": params["intra_op_threads"],
        "inter_op_threads": params["inter_op_threads"],
        "execution_mode": params["execution_mode"],
        "config_entries": {},
    }
    notes = []
    if _has_float8_qdq(src):
        # ORT would fuse fp8 Q/DQ pairs into QLinearConv, which has no float8 kernel on CPU; keep them as
        # explicit Q/DQ so the CPU provider emulates fp8 rounding instead of refusing the model.
        settings["config_entries"]["session.disable_quant_qdq"] = "1"
        if params["optimization_level"] > 1:
            # Seen with onnxruntime 1.24: from ORT_ENABLE_EXTENDED up, the CPU provider's rewrites of float8
            # Q/DQ graphs give wrong outputs (rel_l2_err 1.3 against 0.03 at BASIC on tiny_cnn).
            settings["graph_optimization_level"] = session.LEVELS[1]
            notes.append("float8 Q/DQ: graph optimization capped at ORT_ENABLE_BASIC (higher levels "
                         "mis-compute float8 on the CPU provider)")
    opts = session.options(settings, level=settings["graph_optimization_level"])
    opts.optimized_model_filepath = str(out_dir / FILE)
    try:
        import onnxruntime as ort

        ort.InferenceSession(str(src), opts, providers=[session.PROVIDER])
    except Exception as err:
        if "NOT_IMPLEMENTED" in str(err):
            raise Unsupported(f"precision={params['precision']}: onnxruntime's {session.PROVIDER} has no kernel "
                              f"for this graph ({_first_line(err)})") from err
        raise
    (out_dir / session.SETTINGS_FILE).write_text(json.dumps(settings, indent=2, sort_keys=True))
    return StageResult(outputs={"model": FILE},
                       info={"graph_optimization_level": settings["graph_optimization_level"],
                             "engine_bytes": (out_dir / FILE).stat().st_size, "note": "; ".join(notes) or None})


def _refuse_unsupported(params: dict) -> None:
    if params["tf32"]:
        raise Unsupported(f"precision={params['precision']}: TF32 is a tensor-core math mode of NVIDIA GPUs; "
                          f"onnxruntime's {session.PROVIDER} computes in plain fp32 (use precision=fp32)")


def _has_float8_qdq(path: Path) -> bool:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    float8 = {onnx.TensorProto.FLOAT8E4M3FN, onnx.TensorProto.FLOAT8E4M3FNUZ,
              onnx.TensorProto.FLOAT8E5M2, onnx.TensorProto.FLOAT8E5M2FNUZ}
    return any(init.data_type in float8 for init in model.graph.initializer)


def _first_line(err: Exception) -> str:
    return str(err).strip().splitlines()[0][:300]

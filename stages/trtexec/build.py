"""Build stage for the trtexec backend: `trtexec --onnx --saveEngine --skipInference` with the knobs the tensorrt
backend's build uses (stages.tensorrt.build.plan), and the same shared timing cache store."""
from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

from stages import tensorrt as trt_env
from stages.api import StageResult, Unsupported
from stages.tensorrt import build as trt_build
from stages.tensorrt import timing_cache as tc
from stages.trtexec import backend

VERSION = "1"
OUTPUTS = ("engine",)
CACHED = True
PARAMS = trt_build.PARAMS
# the tensorrt backend's build options, where trtexec is and its extra flags, handed over by the runner (typed in
# stages/trtexec/__init__.py OPTIONS)
BACKEND_OPTIONS = (*trt_build.BACKEND_OPTIONS, "path", "extra_args")
CRASH_PRONE = True  # TensorRT's builder, in trtexec's process: isolated like the Polygraphy build
FILE = "model.engine"
LOG_FILE = "build.log"

log = logging.getLogger(__name__)


def environment(params: dict) -> dict:
    return backend.environment(params["path"])


def run(inputs: dict, params: dict, out_dir: Path) -> StageResult:
    exe = backend.locate(params["path"])
    env = backend.environment(params["path"])
    onnx_path, build_plan, store = trt_build.prepare(inputs, params, env)
    with tempfile.TemporaryDirectory(prefix="trtexec-build-") as scratch:
        session = store.open(Path(scratch)) if store else None
        if session and session.load:  # trtexec reads and rewrites one file: give it a copy of the snapshot
            shutil.copyfile(session.load, session.save)
        cmd = backend.build_command(exe, onnx_path, out_dir / FILE, build_plan,
                                    major=int(env["tensorrt"].split(".")[0]),
                                    timing_cache=Path(session.save) if session else None,
                                    extra_args=params["extra_args"])
        log.info("build: trtexec (TensorRT %s) is building the engine on %s; large models take minutes",
                 env["tensorrt"], env["gpu"])
        status, tail = trt_env.run_logged(cmd, out_dir / LOG_FILE, "trtexec build")
        if status:
            raise RuntimeError(f"trtexec failed to build the engine (exit status {status}); its last lines:\n{tail}")
        publish = store.publish(session, _combine()) if session else None
    return StageResult(outputs={"engine": FILE}, info={
        "engine_bytes": (out_dir / FILE).stat().st_size, "timing_cache": session.status if session else tc.OFF,
        "timing_cache_publish": publish, "tensorrt": env["tensorrt"], "gpu": env["gpu"],
        "compute_capability": env["compute_capability"], "tf32": build_plan.tf32, "trtexec": exe})


def _combine():
    """TensorRT's timing-cache merge where its Python bindings are installed too, else none (see timing_cache)."""
    try:
        return tc.trt_combine(trt_env.import_trt())
    except Unsupported:
        return None

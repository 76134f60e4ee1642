"""Benchmark stage for the trtexec backend: `trtexec --loadEngine` with the benchmark.* knobs, then its log,
--exportTimes, --exportProfile and --exportLayerInfo ingested into summary, samples and layers.

trtexec runs one timed loop per invocation, so benchmark.trials must be 1. Its statistics are its own (the same
formulas as ours: stages/timing_stats.py); the per-query times become the `samples` table.
"""
from __future__ import annotations

import logging
from pathlib import Path

from stages import inputs as model_inputs
from stages import tensorrt as trt_env
from stages.api import Param, StageResult, Unsupported
from stages.gpu import harness
from stages.trtexec import backend, parse

VERSION = "1"
OUTPUTS = ()
CACHED = False
PARAMS = {"feeds": Param(dict), "profile": Param(bool), **harness.PARAMS}
BACKEND_OPTIONS = ("path", "extra_args")  # handed over by the runner (typed in stages/trtexec/__init__.py OPTIONS)
LOG_FILE = "trtexec.log"

log = logging.getLogger(__name__)


def run(inputs: dict, params: dict, out_dir: Path) -> StageResult:
    if params["trials"] != 1:
        raise Unsupported(f"benchmark.trials = {params['trials']}: trtexec runs one timed loop per invocation "
                          f"(valid with backend=trtexec: 1)")
    from stages.gpu import session

    exe = backend.locate(params["path"])
    major = int(backend.version(exe).split(".")[0])
    specs, sizes = model_inputs.model_specs(inputs["reference"], params["feeds"]), model_inputs.sizes(params["feeds"])
    shapes = {s.name: model_inputs.concrete_shape(s, sizes) for s in specs if s.axes()}
    exports = {k: out_dir / f for k, f in backend.EXPORTS.items() if k != "profile" or params["profile"]}
    cmd = backend.inference_command(exe, Path(inputs["engine"]), shapes, params, major=major, exports=exports,
                                    extra_args=params["extra_args"])
    log.info("benchmark: trtexec is measuring (%.1f s + warm-up%s)", params["duration_s"],
             ", then a profiling run" if params["profile"] else "")
    with session.exclusive(watch=True) as mon:
        status, tail = trt_env.run_logged(cmd, out_dir / LOG_FILE, "trtexec")
    if status:
        raise RuntimeError(f"trtexec failed (exit status {status}); its last lines:\n{tail}")
    written = {k: parse.read(path) for k, path in exports.items() if path.is_file()}
    tables, info, _ = backend.ingest(parse.read(out_dir / LOG_FILE), written.get("times"), written.get("profile"),
                                     written.get("layers"), batch_size=params["feeds"]["batch_size"])
    info.update(mon.summary())
    info["cuda_graph_reason"] = "trtexec's own: the CUDA Graph setting its log reports"  # as every benchmark row
    tables["gpu"] = mon.rows
    return StageResult(info=info, tables=tables)

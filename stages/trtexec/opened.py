"""The trtexec backend's engine, opened for the shared validate stage (stages/runtime.py): its outputs against the
fp32 export run by ONNX Runtime on the CPU, on the same batches as every other backend's (trtexec times itself:
its benchmark is its own stage, stages/trtexec/benchmark.py).

trtexec is given each batch as raw binaries (`--loadInputs='name':file.bin`, the bytes of the engine's input type:
the converted graph's, so an fp16-input engine gets the reference's values rounded to fp16), runs it once
(`--iterations=1 --warmUp=0 --duration=0`) and writes its outputs with `--exportOutput` (parse.parse_outputs).
The values come back as text with 6 significant digits, a rounding far below any precision's error but fp32's.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from stages import inputs as model_inputs
from stages import runtime
from stages import tensorrt as trt_env
from stages.api import StageInputError
from stages.onnxruntime import session
from stages.trtexec import backend, parse

# Flags what is validated depends on: an extra arg replacing one would validate something else.
OWN_FLAGS = ("--loadEngine", "--loadInputs", "--exportOutput")

log = logging.getLogger(__name__)


class TrtexecRuntime(runtime.Runtime):
    """trtexec as an accuracy runner: one run of the engine per batch, its --exportOutput read back. The GPU
    session is taken around each run by infer() itself, so the runner is not marked on_gpu."""
    on_gpu = False

    def __init__(self, engine: Path, onnx: Path, reference: Path, options: dict, work_dir: Path):
        clash = [a for a in options["extra_args"] if backend.flag_name(a) in OWN_FLAGS]
        if clash:
            raise StageInputError(f"backend.extra_args = {clash}: validation sets {', '.join(OWN_FLAGS)} itself")
        self.exe, self.engine, self.onnx = backend.locate(options["path"]), Path(engine), Path(onnx)
        self.reference_path, self.work_dir, self.extra_args = Path(reference), Path(work_dir), options["extra_args"]
        self.engine_specs, self.shapes, self.batches, self.version = [], {}, 0, None

    def specs(self, feeds: dict) -> list:
        """Also what the engine's inputs are at the run's sizes: its graph's (a converted graph may take fp16)."""
        self.engine_specs = model_inputs.resolve(model_inputs.specs_from_onnx(self.onnx), feeds)
        self.shapes = {s.name: model_inputs.concrete_shape(s, model_inputs.sizes(feeds))
                       for s in self.engine_specs if s.axes()}
        log.info("validate: trtexec runs the engine on each validation batch")
        return model_inputs.model_specs(self.reference_path, feeds)

    def infer(self, feeds: dict) -> dict:
        outputs, self.version = infer(self.exe, self.engine, feeds, self.engine_specs, self.shapes,
                                      self.work_dir / f"batch{self.batches}", self.extra_args)
        self.batches += 1
        return outputs

    def reference(self) -> session.Runner:
        return session.reference_runner(self.reference_path)

    def info(self) -> dict:
        return {"tensorrt": self.version}


def infer(exe: str, engine: Path, feeds: dict[str, np.ndarray], engine_specs: list[model_inputs.InputSpec],
          shapes: dict[str, tuple[int, ...]], work: Path, extra_args) -> tuple[dict[str, np.ndarray], str | None]:
    """One trtexec run of `engine` on `feeds`: its outputs, and the TensorRT version its log names."""
    from stages.gpu import session as gpu_session

    work.mkdir(parents=True, exist_ok=True)
    files = write_inputs(feeds, {s.name: s.dtype for s in engine_specs}, work)
    output_json = work / "outputs.json"
    cmd = backend.validation_command(exe, engine, shapes, files, output_json, extra_args)
    with gpu_session.exclusive():  # GPU work of its own would disturb another job's measurement
        status, tail = trt_env.run_logged(cmd, work / "trtexec.log", "trtexec validate")
    if status:
        raise RuntimeError(f"trtexec failed to run the engine on {work}'s inputs (exit status {status}); "
                           f"its last lines:\n{tail}")
    if not output_json.is_file():
        raise RuntimeError(f"trtexec wrote no {output_json} (--exportOutput); see {work / 'trtexec.log'}")
    version = parse.parse_log(parse.read(work / "trtexec.log")).version
    return parse.parse_outputs(parse.read(output_json), str(output_json)), version


def write_inputs(feeds: dict[str, np.ndarray], dtypes: dict[str, np.dtype], work: Path) -> dict[str, Path]:
    """Each input as the raw bytes trtexec loads into its binding (C order, the engine's input type)."""
    files = {}
    for i, (name, array) in enumerate(feeds.items()):
        if name not in dtypes:
            raise RuntimeError(f"the engine's graph has no input '{name}' (it has {sorted(dtypes)})")
        files[name] = work / f"input{i}.bin"  # by position: a tensor name need not be a valid file name
        np.ascontiguousarray(array, dtype=dtypes[name]).tofile(files[name])
    return files

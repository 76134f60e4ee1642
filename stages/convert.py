"""Convert stage: put the precision into the ONNX graph with NVIDIA ModelOpt.

fp16/bf16 use AutoCast (casts and low-precision initializers); int8/fp8 use ModelOpt's ONNX Q/DQ
quantization, calibrated on seeded random data or a user .npz. fp32 and tf32 leave the graph as exported:
TF32 is a math mode of the builder, not a property of the graph. With TensorRT 11 the graph IS the precision,
so this stage, not builder flags, decides what an engine computes in.
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path

from stages import datasets, targets
from stages import inputs as model_inputs
from stages.api import Param, StageInputError, StageResult, Unsupported, file_sha256, package_version

VERSION = "5"  # 4: input specs from the export's metadata, named axes; 5: AutoCast runs on the run's shapes
OUTPUTS = ("onnx",)
CACHED = True
PARAMS = {"precision": Param(dict), "calibration": Param(dict), "high_precision_dtype": Param(str),
          "keep_io_types": Param(bool), "seed": Param(int),
          # ONNX node names ModelOpt leaves in high precision (nodes_to_exclude of its quantization and of AutoCast):
          # the precision planner's plan. Keyed by key_extra only when set, so a config without it keeps its cache
          # keys and config_hash (the top-level convert.keep_high_precision, where set, is in config_hash).
          "keep_high_precision": Param(list, optional=True, keyed=False),
          # only random calibration data depends on the sizes (key_extra): a sequence sweep converts once
          "feeds": Param(dict, keyed=False)}
FILE = "model.onnx"

log = logging.getLogger(__name__)


def environment(params: dict) -> dict:
    env = {"onnx": package_version("onnx")}
    if params["precision"]["convert"] != "none":
        env["modelopt"] = package_version("nvidia-modelopt")
        env["onnxruntime"] = package_version("onnxruntime", "onnxruntime-gpu")  # runs the calibration
    return env


# The conversions that run the model on convert.calibration's data: quantization calibrates on it, AutoCast checks
# value ranges on it (ModelOpt's own random data would size every dynamic dim 1).
_RUNS_DATA = ("quantize", "autocast")


def key_extra(params: dict) -> dict:
    """Random calibration data takes the run's axis sizes (not its batch: `calibration.samples` is that); what
    ModelOpt quantizes depends on the batch it is told (_calibration_step)."""
    mode = params["precision"]["convert"]
    extra = {"calibration_step": _calibration_step(params)} if mode == "quantize" else {}
    if params.get("keep_high_precision") and mode in _RUNS_DATA:  # fp32 keeps everything in high precision anyway
        extra["keep_high_precision"] = sorted(params["keep_high_precision"])
    if mode in _RUNS_DATA and not params["calibration"].get("data"):
        extra["calibration_axes"] = params["feeds"].get("axes") or {}
    return extra


def _calibration_step(params: dict) -> int:
    """The batch ModelOpt is told the model runs at: the run's, within the calibration samples."""
    return min(model_inputs.sizes(params["feeds"])[model_inputs.BATCH], params["calibration"]["samples"])


def key_files(params: dict) -> dict:
    data = params["calibration"].get("data")
    if params["precision"]["convert"] not in _RUNS_DATA or not data:
        return {}
    if isinstance(data, str):
        if not Path(data).is_file():
            raise StageInputError(f"convert.calibration.data = '{data}': file not found")
        return {"convert.calibration.data": file_sha256(Path(data))}
    return {"convert.calibration.data": datasets.digest(data),
            "code": targets.factory_source_digest(data["_target_"], "convert.calibration.data._target_")}


def run(inputs: dict, params: dict, out_dir: Path) -> StageResult:
    src, out = inputs["onnx"], out_dir / FILE
    precision, mode = params["precision"]["name"], params["precision"]["convert"]
    if mode == "none":
        _link_or_copy(src, out)
        return StageResult(outputs={"onnx": FILE}, info={"mode": "none"})
    # ModelOpt writes into its input file (shape inference saved in place, seen with TorchScript exports):
    # it gets a private copy, never the cached upstream artifact.
    with tempfile.TemporaryDirectory(prefix="convert-") as scratch:
        private = Path(scratch) / src.name
        for file in src.parent.glob(f"{src.name}*"):  # the graph and its external weights, if any
            shutil.copyfile(file, Path(scratch) / file.name)
        convert = _autocast if mode == "autocast" else _quantize
        try:
            info = convert(private, out, precision, params)
        except (StageInputError, Unsupported):
            raise
        except Exception as err:  # noqa: BLE001 - ModelOpt's own failure: named by what in the graph it cannot take
            others = _other_domains(src)
            if not others:
                raise
            raise Unsupported(f"precision={precision}: ModelOpt failed on this graph ({type(err).__name__}: "
                              f"{str(err).splitlines()[0][:200] if str(err) else ''}); it holds operators outside "
                              f"standard ONNX ({others}), which ModelOpt does not convert; precision=fp32 runs it "
                              f"as it is") from err
    return StageResult(outputs={"onnx": FILE}, info={"mode": mode, **info})


def _other_domains(graph) -> str:
    """The operators of `graph` (a path or a ModelProto) outside the standard ONNX domain ('ai.onnx.ml:
    LinearClassifier, ZipMap'), or ''."""
    import onnx

    proto = onnx.load(str(graph), load_external_data=False) if isinstance(graph, Path) else graph
    others: dict[str, set] = {}
    for node in proto.graph.node:
        if node.domain not in ("", "ai.onnx"):
            others.setdefault(node.domain, set()).add(node.op_type)
    return "; ".join(f"{domain}: {', '.join(sorted(ops))}" for domain, ops in sorted(others.items()))


def _autocast(src: Path, out: Path, precision: str, params: dict) -> dict:
    import numpy as np
    import onnx

    # AutoCast runs the model to find values out of the low precision's range; left to itself it feeds random data
    # with every dynamic dim 1, which a detector with dynamic height/width cannot take (its Concats mismatch).
    # One sample of convert.calibration's data at the run's sizes instead (a fixed batch dim: that many).
    specs = model_inputs.resolve(model_inputs.specs_from_onnx(src), params["feeds"])
    first = specs[0].dims[0] if specs and specs[0].dims else None
    batch = first if isinstance(first, int) else 1
    data = next(datasets.calibration(specs, params["feeds"], params["calibration"], params["seed"], batch=batch))
    samples = src.parent / "autocast-data"  # a directory of .npz files: one batch each, as ModelOpt reads it
    samples.mkdir()
    np.savez(samples / "0.npz", **data)
    with _quiet():  # importing ModelOpt already logs (an NVML error on machines without a GPU)
        from modelopt.onnx.autocast import convert_to_mixed_precision

        proto = convert_to_mixed_precision(str(src), low_precision_type=precision, calibration_data=str(samples),
                                           keep_io_types=params["keep_io_types"], providers=["cpu"],
                                           nodes_to_exclude=_kept_nodes(src, params.get("keep_high_precision") or []))
    onnx.save(proto, str(out))
    return {"opset": next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")),
            "casts": sum(n.op_type == "Cast" for n in proto.graph.node)}


def _quantize(src: Path, out: Path, precision: str, params: dict) -> dict:
    import onnx

    calib = params["calibration"]
    specs = model_inputs.resolve(model_inputs.specs_from_onnx(src), params["feeds"])
    data = next(datasets.calibration(specs, params["feeds"], calib, params["seed"]))  # one batch of them all
    # ModelOpt decides which MatMul/Gemm to quantize from the shapes it is told (else it takes every dynamic dim
    # as 1, and an MLP at any batch looks like matrix-vector products): the run's batch, in calibration steps.
    step = min(_calibration_step(params), len(next(iter(data.values()))))
    keep = _kept_nodes(src, params.get("keep_high_precision") or [])
    shapes = ",".join(f"{name}:{'x'.join(map(str, (step, *array.shape[1:])))}" for name, array in data.items())
    with _quiet():
        from modelopt.onnx.quantization import quantize

        quantize(str(src), quantize_mode=precision, calibration_data=data, calibration_shapes=shapes,
                 calibration_method=calib["method"], calibration_eps=["cpu"],
                 high_precision_dtype=params["high_precision_dtype"], output_path=str(out), log_level="WARNING",
                 nodes_to_exclude=keep or None)
    proto = onnx.load(str(out), load_external_data=False)
    quantized = sum(n.op_type == "QuantizeLinear" for n in proto.graph.node)
    if quantized == 0:
        # ModelOpt skips layers it deems unprofitable; a graph with no Q/DQ would silently measure fp32 under a
        # "fp8" label.
        raise Unsupported(f"precision={precision}: ModelOpt inserted no Q/DQ nodes into this model, so the result "
                          f"would be fp32 under a {precision} label{_why_nothing_quantized(proto, step)}")
    return {"calibration_method": calib["method"], "calibration_samples": len(next(iter(data.values()))),
            "calibration_source": _source_kind(calib.get("data")), "quantize_nodes": quantized,
            "kept_high_precision": len(keep)}


def _kept_nodes(src: Path, names: list) -> list[str]:
    """convert.keep_high_precision as ModelOpt's nodes_to_exclude: each name exactly (ModelOpt reads them as
    regular expressions matched at the start), and each a node of the graph, or the key is refused."""
    import onnx

    if not names:
        return []
    nodes = {n.name for n in onnx.load(str(src), load_external_data=False).graph.node}
    unknown = [n for n in names if not isinstance(n, str) or n not in nodes]
    if unknown:
        raise StageInputError(f"convert.keep_high_precision = {unknown[0]!r}: not a node of the exported graph; "
                              f"valid: its node names, e.g. {', '.join(sorted(nodes)[:5])}")
    return [re.escape(n) + "$" for n in names]


def _why_nothing_quantized(proto, batch: int) -> str:
    """ModelOpt's rules that leave a graph's matrix products alone (modelopt.onnx.quantization.graph_utils
    find_nodes_from_matmul_to_exclude), where the graph's quantizable work is all matrix products."""
    ops = {n.op_type for n in proto.graph.node}
    others = _other_domains(proto)
    if others:
        return f" (its work is in operators outside standard ONNX, {others}, which ModelOpt does not quantize)"
    if not ops & {"MatMul", "Gemm"} or ops & {"Conv", "ConvTranspose"}:
        return " (no layer it will quantize: e.g. convolutions with few channels)"
    return (f": it leaves out every MatMul/Gemm whose output has a dim of 1 (a matrix-vector product: here "
            f"batch_size={batch}) or whose K or N is below 16, where TensorRT's int8/fp8 kernels gain nothing. A "
            f"larger batch_size (or wider layers) would change it; at this batch the answer is fp16 or fp32")


def _source_kind(data) -> str:
    return "random" if not data else "npz" if isinstance(data, str) else str(data["_target_"])


def _link_or_copy(src: Path, out: Path) -> None:
    """The graph as exported, weights side file included. A hard link costs no space; the cache verifies
    content by digest, so sharing an inode with the upstream entry is safe."""
    for file in (src, src.with_name(src.name + ".data")):
        if file.exists():
            target = out.with_name(out.name + file.name[len(src.name):])
            try:
                os.link(file, target)
            except OSError:
                shutil.copyfile(file, target)


def _to_debug(record: logging.LogRecord) -> bool:
    log.debug("modelopt: %s", record.getMessage())
    return False


@contextlib.contextmanager
def _quiet():
    """ModelOpt and ORT's quantizer print progress bars to stdout/stderr; keep them in the debug log."""
    buf = io.StringIO()
    # ModelOpt logs through its own handlers, including an ERROR about NVML ("Failed to get GPU count") on machines
    # without a GPU, which is expected here (calibration runs on the CPU provider). quantize(log_level=...) resets
    # its loggers' levels, so a filter keeps its records out of the user's console: they go to our debug log.
    loggers = [logging.getLogger(name) for name in ("modelopt", "modelopt.onnx")]
    for logger in loggers:
        logger.addFilter(_to_debug)
    try:
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
            yield
    finally:
        for logger in loggers:
            logger.removeFilter(_to_debug)
    if buf.getvalue():
        log.debug("%s", buf.getvalue())

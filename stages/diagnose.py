"""The diagnostic graphs of the precision planner: the converted graph and its fp32 reference with every
intermediate tensor marked as an output (Polygraphy's `--onnx-outputs mark all`), for stages/layer_errors.py.

A cached artifact of its own, apart from the measured build: marked outputs keep every intermediate tensor alive,
which blocks the fusions a measured build makes (NVIDIA/TensorRT #2571).
"""
from __future__ import annotations

import contextlib
from pathlib import Path

from stages.api import StageResult, package_version

VERSION = "1"
OUTPUTS = ("model", "reference")
CACHED = True
PARAMS: dict = {}
FILES = {"model": "model.marked.onnx", "reference": "reference.marked.onnx"}


def environment(params: dict) -> dict:
    return {"polygraphy": package_version("polygraphy"), "onnx": package_version("onnx")}


def run(inputs: dict, params: dict, out_dir: Path) -> StageResult:
    marked = {name: mark_all(inputs[source], out_dir / FILES[name])
              for name, source in (("model", "onnx"), ("reference", "reference"))}
    return StageResult(outputs=dict(FILES), info={"marked_outputs": marked["model"],
                                                  "marked_reference_outputs": marked["reference"]})


def mark_all(src: Path, out: Path) -> int:
    """`src` with every tensor a node computes marked as a graph output (typed by shape inference), saved to `out`;
    how many outputs it has."""
    import onnx
    from polygraphy import constants
    from polygraphy.backend.onnx import InferShapes, ModifyOutputs, OnnxFromPath

    with _polygraphy_quiet():
        proto = ModifyOutputs(InferShapes(OnnxFromPath(str(src))), outputs=constants.MARK_ALL)()
    onnx.save(proto, str(out))
    return len(proto.graph.output)


@contextlib.contextmanager
def _polygraphy_quiet():
    """Polygraphy logs every load at INFO to stdout; only its warnings and errors reach the user."""
    from polygraphy.logger import G_LOGGER

    before = G_LOGGER.module_severity
    G_LOGGER.module_severity = G_LOGGER.WARNING
    try:
        yield
    finally:
        G_LOGGER.module_severity = before

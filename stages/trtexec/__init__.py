"""trtexec backend: NVIDIA's command-line tool builds and times the engine with the same knobs as the tensorrt
backend, and its log and JSON exports are ingested into our tables (also by `python -m pipeline.ingest`).

The plugin: the tensorrt backend's build options plus where trtexec is and extra flags for it (`backend.<key>`,
values in conf/backend/trtexec.yaml), what it needs, how to get it.
"""
from stages.api import Param
from stages.availability import Requires
from stages.tensorrt import BUILD_OPTIONS

NGC_PATH = "/usr/src/tensorrt/bin/trtexec"  # where NVIDIA's TensorRT container keeps it
OPTIONS = {
    **BUILD_OPTIONS,
    "path": Param(str, keyed=False, executable=True, doc="the trtexec to run (its TensorRT version is keyed)"),
    "extra_args": Param(list, doc="extra trtexec flags; each replaces ours of the same name"),
}
REQUIRES = Requires(gpu=True, executable="path", fallbacks=(NGC_PATH,))
HOW_TO_GET = ("trtexec ships with TensorRT: NVIDIA's container nvcr.io/nvidia/tensorrt has it at "
              f"{NGC_PATH}; put its directory on PATH or set backend.path.")


def open_runtime(inputs: dict, options: dict, work_dir):
    """The built engine (`inputs`: engine, onnx: the converted graph, reference) for the shared validate stage."""
    from stages.trtexec import opened

    return opened.TrtexecRuntime(inputs["engine"], inputs["onnx"], inputs["reference"], options, work_dir)

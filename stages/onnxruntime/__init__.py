"""ONNX Runtime backend (CPU execution provider): export -> convert -> build -> benchmark, validate, profile.

The plugin: its options (`backend.<key>`, values in conf/backend/onnxruntime.yaml), what it needs to run, and how
to get it. Its stages are the modules beside this file.
"""
from stages.api import Param
from stages.availability import Requires

OPTIONS = {
    "optimization_level": Param(int, min=0, max=5, doc="TensorRT's 0-5 scale: 0/1/2 are ORT's DISABLE_ALL/BASIC/"
                                                        "EXTENDED, 3-5 its ENABLE_ALL"),
    "intra_op_threads": Param(int, min=0, doc="0: ONNX Runtime's default"),
    "inter_op_threads": Param(int, min=0, doc="0: ONNX Runtime's default"),
    "execution_mode": Param(str, choices=("sequential", "parallel")),
}
REQUIRES = Requires(modules=("onnxruntime",))
HOW_TO_GET = "ONNX Runtime: `pip install onnxruntime` (or onnxruntime-gpu, which also runs on CPU)."


def open_runtime(inputs: dict, options: dict, work_dir):
    """The built model (`inputs`: model, reference) for the shared benchmark, validate and profile stages."""
    from stages.onnxruntime import opened

    return opened.OnnxRuntime(inputs["model"], inputs["reference"])

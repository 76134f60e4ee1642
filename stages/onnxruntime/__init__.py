"""ONNX Runtime backend: export -> convert -> build -> benchmark, validate, profile, on the execution provider that
`backend.provider` names (stages/onnxruntime/providers.py: the CPU's, host-timed; CUDA's or TensorRT's, timed by
the GPU harness).

The plugin: its options (`backend.<key>`, values in conf/backend/onnxruntime.yaml), what it needs to run, and how
to get it. Its stages are the modules beside this file.
"""
from stages.api import Param
from stages.availability import Requires
from stages.onnxruntime import providers

OPTIONS = {
    "optimization_level": Param(int, min=0, max=5, doc="TensorRT's 0-5 scale: 0/1/2 are ORT's DISABLE_ALL/BASIC/"
                                                        "EXTENDED, 3-5 its ENABLE_ALL"),
    "intra_op_threads": Param(int, min=0, doc="0: ONNX Runtime's default"),
    "inter_op_threads": Param(int, min=0, doc="0: ONNX Runtime's default"),
    "execution_mode": Param(str, choices=("sequential", "parallel")),
    # implied: configs from before the option ran on the CPU provider, and keep their config_hash and cache keys
    "provider": Param(str, choices=tuple(providers.NAMES), implied="cpu",
                      doc="execution provider: cpu (host-timed), cuda or tensorrt (onnxruntime-gpu, GPU-timed)"),
}
REQUIRES = Requires(modules=("onnxruntime",), gpu_when=(("provider", providers.GPU),))
HOW_TO_GET = ("ONNX Runtime: `pip install onnxruntime` (or onnxruntime-gpu, which also runs on CPU). backend.provider="
              "cuda or tensorrt: onnxruntime-gpu (`pip install onnxruntime-gpu[cuda,cudnn]`) and an NVIDIA GPU; "
              "tensorrt also TensorRT's libraries (libnvinfer).")


def open_runtime(inputs: dict, options: dict, work_dir):
    """The built model (`inputs`: model, reference) for the shared benchmark, validate and profile stages."""
    from stages.onnxruntime import opened

    return opened.open_build(inputs["model"], inputs["reference"])  # on the provider it was built for

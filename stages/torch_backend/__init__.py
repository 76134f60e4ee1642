"""PyTorch backend: model -> build (an AOTInductor package) -> compile (the in-process fallback) -> benchmark,
validate, profile. GPU timing through stages/gpu/harness.py, CPU timing through stages/cpu_timing.py.

The plugin: its options (`backend.<key>`, values in conf/backend/torch.yaml), what it needs, how to get it.
"""
from stages.api import Param
from stages.availability import Requires
from stages.torch_backend import quantize

ISOLATE = ("auto", "always", "never")
OPTIONS = {
    "compile": Param(str, choices=("eager", "default", "max-autotune"),
                     doc="eager, or torch.compile with that mode (max-autotune: without its own CUDA graphs)"),
    "build": Param(str, choices=("aoti", "compile"),
                   doc="a compiled mode built as an AOTInductor package (aoti, cached) or by torch.compile in-process"),
    "channels_last": Param(bool, doc="NHWC memory format for 4-d activations"),
    "device": Param(str, choices=("auto", "cuda", "cpu"), doc="auto: cuda when torch sees one"),
    "quantization": Param(str, choices=quantize.CHOICES,
                          doc="int8/fp8 recipe (torchao): auto = int8_dynamic for int8, fp8_dynamic_rowwise for "
                              "fp8, none otherwise"),
    "keep_high_precision": Param(list, doc="layers a recipe leaves in bf16: module-name patterns, @first, @last"),
    "isolate_measurements": Param(str, choices=ISOLATE, keyed=False,
                                  doc="benchmark, validate and profile each in a child process: auto (on CUDA), "
                                      "always, never"),
    # Set only by conf/sweep/gpu_precision.yaml: a named point of that sweep, whose precision and quantization it
    # takes from the table `points` (they change no result of their own: precision and quantization do).
    "point": Param(str, optional=True, keyed=False, doc="a point of +sweep=gpu_precision (a key of backend.points)"),
    "points": Param(dict, optional=True, keyed=False, doc="+sweep=gpu_precision's points: {precision, quantization}"),
}
REQUIRES = Requires(modules=("torch",))            # it runs on CPU too (host-timed)...
AUTO_REQUIRES = Requires(modules=("torch",), torch_cuda=True)  # ...but `auto` takes it only on CUDA
HOW_TO_GET = ("The torch backend on a GPU needs a CUDA build of torch and an NVIDIA GPU; its int8/fp8 recipes need "
              "torchao (pip install -e '.[gpu]').")


def open_runtime(inputs: dict, options: dict, work_dir):
    """The compiled model (`inputs`: compiled) for the shared benchmark, validate and profile stages."""
    from stages.torch_backend import opened

    return opened.TorchRuntime(inputs["compiled"])


def measure_isolated(options: dict) -> bool:
    """backend.isolate_measurements: whether the measuring stages run each in a child process (auto: on CUDA, where a
    point can crash the process or leave its CUDA context unusable for the next; each child opens the model from the
    files: the package, or on the in-process path the weights, built again there). The compile stage asks it too."""
    from stages.torch_backend import compile as compile_stage

    return compile_stage.measured_in_child(options)

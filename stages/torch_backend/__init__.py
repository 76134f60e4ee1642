"""PyTorch backend: model -> compile -> benchmark, validate, profile. GPU timing through stages/gpu/harness.py,
CPU timing through stages/cpu_timing.py.

The plugin: its options (`backend.<key>`, values in conf/backend/torch.yaml), what it needs, how to get it.
"""
from stages.api import Param
from stages.availability import Requires

OPTIONS = {
    "compile": Param(str, choices=("eager", "default", "max-autotune"),
                     doc="eager, or torch.compile with that mode"),
    "channels_last": Param(bool, doc="NHWC memory format for 4-d activations"),
    "device": Param(str, choices=("auto", "cuda", "cpu"), doc="auto: cuda when torch sees one"),
}
REQUIRES = Requires(modules=("torch",))            # it runs on CPU too (host-timed)...
AUTO_REQUIRES = Requires(modules=("torch",), torch_cuda=True)  # ...but `auto` takes it only on CUDA
HOW_TO_GET = "The torch backend on a GPU needs a CUDA build of torch and an NVIDIA GPU."

"""An ONNX Runtime session on a GPU provider as a harness Workload (stages/gpu/harness.py).

ORT has no "launch on this stream" call: a GPU provider computes on the stream its session was opened with
(`user_compute_stream`). So each lane opens its own session on its first enqueue, on the harness's compute stream
for that lane, and runs it with IOBinding on device buffers (inputs seeded once, outputs bound where the first run
put them), so a run copies nothing, and with `disable_synchronize_execution_providers`, so it returns once its work
is enqueued: the harness's CUDA events around the call on that stream then time the kernels. The run option and
IOBinding calls are those ORT's own CUDA helper uses (onnxruntime/transformers/io_binding_helper.py).

Written from ONNX Runtime's documented API; it has not run on a GPU yet.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from stages.gpu.harness import Buffer
from stages.onnxruntime.providers import DEVICE_ID


class OrtWorkload:
    def __init__(self, feeds: dict[str, np.ndarray], open_session: Callable[[int], object], device: str = "cuda"):
        self.feeds, self.open_session = feeds, open_session  # open_session(stream) -> InferenceSession on it
        self.device = device  # where the bound buffers live: "cuda" (tests bind them on the "cpu" too)
        self.sess = self.binding = self.stream = self.run_options = None
        self.inputs: list = []   # OrtValues on the device: kept alive while bound
        self.outputs: list = []

    def enqueue(self, stream: int) -> None:
        if self.sess is None:
            self._open(stream)
        elif stream != self.stream:  # the session computes on the stream it was opened with, and no other
            raise RuntimeError(f"an ONNX Runtime lane runs on the stream its session was opened with ({self.stream}), "
                               f"not {stream}")
        self.sess.run_with_iobinding(self.binding, self.run_options)

    def _open(self, stream: int) -> None:
        import onnxruntime as ort

        self.stream, self.sess = stream, self.open_session(stream)
        self.binding = self.sess.io_binding()
        for name, value in self.feeds.items():
            self.inputs.append(ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(value), self.device, DEVICE_ID))
            self.binding.bind_ortvalue_input(name, self.inputs[-1])
        names = [o.name for o in self.sess.get_outputs()]
        for name in names:
            self.binding.bind_output(name, self.device, DEVICE_ID)
        self.sess.run_with_iobinding(self.binding)  # synchronous: ORT allocates the outputs, now of known shapes
        self.outputs = self.binding.get_outputs()
        for name, value in zip(names, self.outputs):
            self.binding.bind_ortvalue_output(name, value)  # every later run writes into these
        self.run_options = ort.RunOptions()
        self.run_options.add_run_config_entry("disable_synchronize_execution_providers", "1")

    def buffers(self) -> tuple[list[Buffer], list[Buffer]]:
        return tuple([Buffer(v.data_ptr(), v.tensor_size_in_bytes()) for v in values]
                     for values in (self.inputs, self.outputs))

    def io_bytes(self) -> int:
        return sum(v.tensor_size_in_bytes() for v in (*self.inputs, *self.outputs))

    def close(self) -> None:
        self.binding = self.sess = None
        self.inputs, self.outputs = [], []

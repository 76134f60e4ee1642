"""A torch callable as a harness Workload: launches on the harness's stream, captures its own CUDA graph
(torch's caching allocator must know a capture is under way, so the harness cannot capture it blindly)."""
from __future__ import annotations

from stages.gpu.harness import Buffer

_GRAPH_WARMUP = 2  # extra eager calls before capture: lazy initialisation and autotuning must not be captured


class TorchWorkload:
    def __init__(self, fn, example: tuple):
        self.fn, self.x, self.out = fn, example, None  # example: the inputs, in the order fn takes them
        self._streams: dict[int, object] = {}
        self._graph = None

    def _stream(self, handle: int):
        import torch

        if handle not in self._streams:
            self._streams[handle] = torch.cuda.ExternalStream(handle)
        return self._streams[handle]

    def enqueue(self, stream: int) -> None:
        import torch

        with torch.cuda.stream(self._stream(stream)):
            self.out = self.fn(*self.x)

    def capture(self, stream: int):
        import torch

        for _ in range(_GRAPH_WARMUP):
            self.enqueue(stream)
        torch.cuda.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=self._stream(stream)):
            self.out = self.fn(*self.x)
        self._graph = graph

        def launch(handle: int) -> None:
            with torch.cuda.stream(self._stream(handle)):
                graph.replay()

        return launch

    def buffers(self) -> tuple[list[Buffer], list[Buffer]]:
        outs = self.out if isinstance(self.out, (tuple, list)) else [self.out]
        return ([Buffer(x.data_ptr(), x.nbytes) for x in self.x],
                [Buffer(o.data_ptr(), o.nbytes) for o in outs if hasattr(o, "data_ptr")])

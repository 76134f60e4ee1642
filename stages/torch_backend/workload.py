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

    def host_sync(self) -> str | None:
        """One call on the current stream with torch's sync debug mode at `error`: why it cannot be captured, where
        the callable waits on the host (an `.item()`, a tensor formatted into a string: torchao's eager int8 path
        does), which would invalidate a capture; None where it does not. Asked before any capture is tried
        (opened.graph_decision); any other error is the call's own and is raised."""
        import warnings

        import torch

        previous = torch.cuda.get_sync_debug_mode()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "a prototype feature": it may miss a sync, never invents one
            torch.cuda.set_sync_debug_mode("error")
        try:
            self.out = self.fn(*self.x)
        except RuntimeError as err:
            if "synchroniz" not in str(err):
                raise
            return (f"not captured: the callable synchronises with the host (torch's sync debug mode: "
                    f"{str(err).splitlines()[0]}), which a CUDA graph capture forbids")
        finally:
            torch.cuda.set_sync_debug_mode(previous)
        return None

    def buffers(self) -> tuple[list[Buffer], list[Buffer]]:
        outs = self.out if isinstance(self.out, (tuple, list)) else [self.out]
        return ([Buffer(x.data_ptr(), x.nbytes) for x in self.x],
                [Buffer(o.data_ptr(), o.nbytes) for o in outs if hasattr(o, "data_ptr")])

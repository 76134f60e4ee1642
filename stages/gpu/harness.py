"""GPU timing harness with trtexec's discipline, for any backend that can enqueue its work on a CUDA stream.

- Warm-up by host time; its iterations are not counted. Then at least `min_iterations` AND `duration_s`
  of GPU event time (samples/common/sampleInference.cpp).
- Enqueue-ahead with two in-flight slots per inference stream: enqueue into the free slot, then wait on
  the older one, so the GPU never idles while the host collects a result.
- Per-iteration GPU compute time from an event pair around the launch on the compute stream, and host
  enqueue time around the launch call.
- Optional H2D/D2H copies from pinned host buffers on their own streams; latency = h2d + compute + d2h.
- One inference captured in a CUDA graph after one plain enqueue (TensorRT needs that first enqueue);
  a failed capture falls back to plain enqueue and the reason is kept.
- Spin-wait (poll the event) or blocking sync; several inference streams; repeated trials.
- With `until_stable` (stages/stability.py, the rule the host loop follows), each timed loop goes on past the
  minimum until the medians of its last windows of GPU compute time agree, up to a time limit; the windows are cut
  on the GPU event timeline, as the duration is.
- Hooks told when the timed span starts and ends (after warm-up, around all trials, the GPU idle at both
  points): the NVML monitor reads the energy counter there, a backend resets and reads its peak memory.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Protocol

from stages import api, stability
from stages.api import Param
from stages.gpu.cuda import CudaError, call, is_ready, rt

# The benchmark.* keys a harness-timed benchmark stage takes (Settings below, plus the inference streams)
PARAMS = {
    "warmup_ms": Param(float, min=0), "duration_s": Param(float, min=0), "min_iterations": Param(int, min=1),
    "trials": Param(int, min=1), "cuda_graph": Param(bool), "sync": Param(str, choices=("spin", "blocking")),
    "data_transfers": Param(bool), "streams": Param(int, min=1),
}


@dataclass(frozen=True)
class Buffer:
    ptr: int     # device address
    nbytes: int


class Workload(Protocol):
    """One inference context with its own device buffers. The harness makes one lane per workload."""

    def enqueue(self, stream: int) -> None:
        """Launch one inference on `stream` (a raw cudaStream_t handle) without synchronising."""

    def buffers(self) -> tuple[list[Buffer], list[Buffer]]:
        """(inputs, outputs) in device memory, valid after one enqueue: what H2D fills and D2H reads."""

    # Optional: `capture(stream) -> launch(stream)` when the backend must capture its own CUDA graph
    # (torch's allocator must know about the capture); otherwise the harness captures the stream itself.


class SpanHook(Protocol):
    """Told when the timed loops start and end (warm-up, graph capture and the first replay are before)."""

    def timed_start(self) -> None: ...

    def timed_end(self) -> None: ...


@dataclass
class Settings:
    warmup_ms: float = 200.0
    duration_s: float = 3.0
    min_iterations: int = 10
    trials: int = 1
    cuda_graph: bool = True
    sync: str = "spin"            # spin | blocking
    data_transfers: bool = False
    until_stable: dict | None = None  # benchmark.until_stable; None or enabled=false: off

    @classmethod
    def from_params(cls, params: dict) -> "Settings":
        """From a benchmark stage's params (the `benchmark.*` keys; until_stable is optional: a config recorded
        before it has none, and is timed as it was)."""
        return cls(**{k: params[k] for k in cls.__dataclass_fields__ if k in params or k != "until_stable"})


@dataclass
class Trial:
    times: dict[str, list[float]]  # metric -> one value (ms) per counted iteration
    bench_time_ms: float           # GPU event time from the first counted start to the last end
    stability: stability.Outcome | None = None  # with until_stable


@dataclass
class Measurement:
    trials: list[Trial]
    warmup_iterations: int
    cuda_graph: bool
    graph_note: str | None
    streams: int
    sync: str
    data_transfers: bool
    notes: list[str] = field(default_factory=list)


class _Lane:
    """One inference stream: its workload, CUDA streams, two slots of events, pinned host buffers."""

    def __init__(self, workload: Workload, settings: Settings):
        self.workload, self.settings = workload, settings
        self._owned_streams: list = []
        self.slots: list[dict] = []
        self.first_start = None
        self.pinned: list[tuple[Buffer, int]] = []   # (device buffer, pinned host address), inputs then outputs
        self.graph_exec = None
        self.launch: Callable[[int], None] = workload.enqueue
        self.enqueue_ms = [0.0, 0.0]
        self.n_inputs = 0
        self.issued = 0      # iterations enqueued on this lane
        self.collected = 0
        self.last_done = None
        try:
            self._create()
        except BaseException:
            self.close()  # whatever was created before the failure
            raise

    def _create(self) -> None:
        r, settings = rt(), self.settings
        self.compute = self._stream()
        self.h2d = self._stream() if settings.data_transfers else None
        self.d2h = self._stream() if settings.data_transfers else None
        flags = r.cudaEventBlockingSync if settings.sync == "blocking" else r.cudaEventDefault
        names = ("compute_start", "compute_end") + (
            ("h2d_start", "h2d_end", "d2h_start", "d2h_end") if settings.data_transfers else ())
        for _ in range(2):
            self.slots.append({})
            for name in names:
                self.slots[-1][name] = call("cudaEventCreateWithFlags", flags)
        self.first_start = call("cudaEventCreateWithFlags", flags)

    def _stream(self):
        stream = call("cudaStreamCreateWithFlags", rt().cudaStreamNonBlocking)
        self._owned_streams.append(stream)
        return stream

    def prepare(self) -> str | None:
        """One plain enqueue, pinned buffers for the transfers, and the CUDA graph if asked for.
        Returns why the graph could not be used, or None."""
        self.workload.enqueue(int(self.compute))
        call("cudaStreamSynchronize", self.compute)
        note = self._graph() if self.settings.cuda_graph else None
        if self.settings.data_transfers:  # after capture: a graph's buffers are the ones it replays into
            inputs, outputs = self.workload.buffers()
            self.n_inputs = len(inputs)
            self.pinned = [(b, call("cudaMallocHost", max(b.nbytes, 1))) for b in (*inputs, *outputs)]
            # The host side starts as a copy of the workload's (seeded) inputs, so every timed H2D copy
            # uploads the same data instead of overwriting it with whatever pinned memory held.
            for buf, host in self.pinned[:self.n_inputs]:
                call("cudaMemcpy", host, buf.ptr, buf.nbytes, rt().cudaMemcpyKind.cudaMemcpyDeviceToHost)
        return note

    def _graph(self) -> str | None:
        try:
            capture = getattr(self.workload, "capture", None)
            self.launch = capture(int(self.compute)) if capture else self._capture()
            self.launch(int(self.compute))  # the first replay uploads the graph: keep it out of the timings
            call("cudaStreamSynchronize", self.compute)
            return None
        except Exception as err:  # noqa: BLE001 - any capture failure means: run without a graph
            # The note is written first: it must name what failed, not what the clean-up then ran into.
            note = f"CUDA graph capture failed, plain enqueue used: {type(err).__name__}: {str(err)[:300]}"
            try:
                self._abort_capture()
            except Exception:  # noqa: BLE001 - a failing clean-up must not replace the reason
                pass
            self.launch = self.workload.enqueue
            return note

    def _capture(self) -> Callable[[int], None]:
        exe = self.graph_exec = capture(self.compute, self.workload.enqueue)
        return lambda stream: call("cudaGraphLaunch", exe, stream)

    def _abort_capture(self) -> None:
        """End a capture a failure left open (a workload's own capture), destroying the partial graph."""
        r = rt()
        err, capturing = r.cudaStreamIsCapturing(self.compute)
        if err == r.cudaError_t.cudaSuccess and capturing != r.cudaStreamCaptureStatus.cudaStreamCaptureStatusNone:
            _destroy_graph(_end_capture(self.compute)[1])
        rt().cudaGetLastError()  # clear a sticky capture error so later calls are not blamed for it

    def enqueue(self, first: bool) -> None:
        r = rt()
        slot = self.issued % 2
        ev = self.slots[slot]
        start_stream = self.h2d if self.h2d is not None else self.compute
        if first:
            call("cudaEventRecord", self.first_start, start_stream)
        if self.h2d is not None:
            if self.issued:  # inputs are overwritten only once the previous inference stopped reading them
                call("cudaStreamWaitEvent", self.h2d, self.slots[(self.issued - 1) % 2]["compute_end"], 0)
            call("cudaEventRecord", ev["h2d_start"], self.h2d)
            for buf, host in self.pinned[:self.n_inputs]:
                call("cudaMemcpyAsync", buf.ptr, host, buf.nbytes, r.cudaMemcpyKind.cudaMemcpyHostToDevice, self.h2d)
            call("cudaEventRecord", ev["h2d_end"], self.h2d)
            call("cudaStreamWaitEvent", self.compute, ev["h2d_end"], 0)
        call("cudaEventRecord", ev["compute_start"], self.compute)
        t0 = time.perf_counter()
        self.launch(int(self.compute))
        self.enqueue_ms[slot] = (time.perf_counter() - t0) * 1e3
        call("cudaEventRecord", ev["compute_end"], self.compute)
        if self.d2h is not None:
            call("cudaStreamWaitEvent", self.d2h, ev["compute_end"], 0)
            call("cudaEventRecord", ev["d2h_start"], self.d2h)
            for buf, host in self.pinned[self.n_inputs:]:
                call("cudaMemcpyAsync", host, buf.ptr, buf.nbytes, r.cudaMemcpyKind.cudaMemcpyDeviceToHost, self.d2h)
            call("cudaEventRecord", ev["d2h_end"], self.d2h)
        self.issued += 1

    def collect(self) -> dict[str, float]:
        """Wait for the oldest uncollected iteration and return its timings."""
        slot = self.collected % 2
        ev = self.slots[slot]
        done = ev["d2h_end"] if self.d2h is not None else ev["compute_end"]
        if self.settings.sync == "spin":
            while not is_ready(done):
                pass
        else:
            call("cudaEventSynchronize", done)
        elapsed = lambda a, b: call("cudaEventElapsedTime", ev[a], ev[b])  # noqa: E731
        times = {"gpu_compute": elapsed("compute_start", "compute_end"), "enqueue": self.enqueue_ms[slot]}
        if self.d2h is not None:
            times["h2d"] = elapsed("h2d_start", "h2d_end")
            times["d2h"] = elapsed("d2h_start", "d2h_end")
        times["latency"] = times["gpu_compute"] + times.get("h2d", 0.0) + times.get("d2h", 0.0)
        self.last_done = done
        self.collected += 1
        return times

    def span_ms(self) -> float:
        return call("cudaEventElapsedTime", self.first_start, self.last_done)

    def in_flight(self) -> int:
        return self.issued - self.collected

    def close(self) -> None:
        for slot in self.slots:
            for event in slot.values():
                rt().cudaEventDestroy(event)
        if self.first_start is not None:
            rt().cudaEventDestroy(self.first_start)
        for _, host in self.pinned:
            rt().cudaFreeHost(host)
        if self.graph_exec is not None:
            rt().cudaGraphExecDestroy(self.graph_exec)
        for stream in self._owned_streams:
            rt().cudaStreamDestroy(stream)


def capture(stream, enqueue: Callable[[int], None]):
    """One `enqueue(stream)` captured from the stream into an instantiated CUDA graph (cudaGraphExec_t).
    Call it after one plain enqueue: TensorRT allocates on the first, which a capture must not contain.

    On a failure the error raised is the first one: an enqueue that fails inside the capture usually also fails
    cudaStreamEndCapture (the capture is invalidated), and that second error says nothing. Whatever graph
    EndCapture hands back is destroyed on every path; the instantiated graph keeps its own copy."""
    call("cudaStreamBeginCapture", stream, rt().cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal)
    try:
        enqueue(int(stream))
    except BaseException:
        _destroy_graph(_end_capture(stream)[1])
        raise
    err, graph = _end_capture(stream)
    if err != rt().cudaError_t.cudaSuccess:
        raise CudaError(f"cudaStreamEndCapture: {getattr(err, 'name', err)}")
    try:
        return call("cudaGraphInstantiate", graph, 0)
    finally:
        _destroy_graph(graph)


def _end_capture(stream) -> tuple:
    """cudaStreamEndCapture without raising: (err, graph); on an error the partial graph it may still return
    is destroyed here and graph is None."""
    result = rt().cudaStreamEndCapture(stream)
    err, graph = result[0], (result[1] if len(result) > 1 else None)
    if err != rt().cudaError_t.cudaSuccess:
        _destroy_graph(graph)  # an invalidated capture may still return a partial graph
        graph = None
    return err, graph


def _destroy_graph(graph) -> None:
    if graph is not None and int(graph):
        rt().cudaGraphDestroy(graph)  # its own error, if any, is not the one to report


def run(workloads: list[Workload], settings: Settings, hooks: tuple | list = ()) -> Measurement:
    """Measure `workloads` (one per inference stream) and return every counted iteration's timings. `hooks`
    (SpanHook) are told when the timed span starts and ends: it covers every trial and nothing else."""
    rule = stability.Rule.from_param(settings.until_stable)  # a bad setting is named before the GPU is touched
    lanes: list[_Lane] = []
    try:
        for w in workloads:
            lanes.append(_Lane(w, settings))
        notes = {lane.prepare() for lane in lanes} - {None}
        if notes:  # one lane without a graph: run them all without, so the streams stay comparable
            for lane in lanes:
                lane.launch = lane.workload.enqueue
        warmup = _warm_up(lanes, settings)
        for hook in hooks:
            hook.timed_start()
        try:
            trials = [_timed_loop(lanes, settings, rule) for _ in range(settings.trials)]
        finally:
            for hook in reversed(hooks):
                hook.timed_end()
        return Measurement(trials, warmup, settings.cuda_graph and not notes, "; ".join(sorted(notes)) or None,
                           len(lanes), settings.sync, settings.data_transfers)
    finally:
        for lane in lanes:
            lane.close()


def _drain(lanes: list[_Lane]) -> list[dict[str, float]]:
    out = []
    for lane in lanes:
        while lane.in_flight():
            out.append(lane.collect())
    return out


def _warm_up(lanes: list[_Lane], settings: Settings) -> int:
    end = time.perf_counter() + settings.warmup_ms / 1e3
    count = 0
    while count == 0 or time.perf_counter() < end:
        for lane in lanes:
            lane.enqueue(first=False)
            if lane.in_flight() > 1:
                lane.collect()
        count += 1
    _drain(lanes)
    return count * len(lanes)


def _timed_loop(lanes: list[_Lane], settings: Settings, rule: stability.Rule | None = None) -> Trial:
    """One trial: at least min_iterations AND duration_s of GPU event time, and with `rule` until the medians of
    the last windows of GPU compute time agree or its time limit. A window is cut where an iteration ends on its
    lane's event timeline (since the trial's first start); the iterations drained after the stop count in the
    statistics, not in the decision."""
    times: dict[str, list[float]] = {}
    counted, first, target_ms = 0, True, settings.duration_s * 1e3
    windows = stability.Windows(rule, rule.window_ns(settings.duration_s)) if rule else None
    limit_ms = rule.limit_ns(settings.duration_s) / 1e6 if rule else target_ms
    base = [lane.collected for lane in lanes]
    last_report = time.perf_counter()
    while True:
        for lane in lanes:
            lane.enqueue(first=first)
            if lane.in_flight() > 1:  # two slots: the older one must finish before the host goes on
                one = lane.collect()
                _add(times, one)
                counted += 1
                if windows is not None:  # one more event query, while the GPU runs the other slot
                    windows.add(int(lane.span_ms() * 1e6), one["gpu_compute"])
        first = False
        every_lane_counted = all(lane.collected > b for lane, b in zip(lanes, base))
        if counted >= settings.min_iterations and every_lane_counted:
            span = max(lane.span_ms() for lane in lanes)
            if time.perf_counter() - last_report > 0.1:
                api.report_progress(min(span / target_ms, 1.0) if target_ms else 1.0, span / 1e3,
                                    settings.duration_s)
                last_report = time.perf_counter()
            if span >= target_ms and (windows is None or windows.settled or span >= limit_ms):
                break
    for t in _drain(lanes):
        _add(times, t)
    return Trial(times, max(lane.span_ms() for lane in lanes), stability.outcome(windows) if windows else None)


def _add(times: dict[str, list[float]], one: dict[str, float]) -> None:
    for key, value in one.items():
        times.setdefault(key, []).append(value)

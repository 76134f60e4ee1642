"""TensorRT's per-layer profile (the shared profile stage asks the opened engine: stages/tensorrt/opened.py):
per-layer GPU times from TensorRT's IProfiler, plus what the engine inspector says
about each layer (type, output dtype, tactic, stream), into the `layers` table.

It runs after the timed benchmark, in a run of its own, as trtexec does: profiling synchronises after every
layer, so its numbers say where the time goes, not how long an inference takes. The profiler is attached first,
then one plain enqueue runs (TensorRT allocates on it, and a CUDA graph can only be captured after it). With a
CUDA graph the context is told not to report on enqueue (`enqueue_emits_profile = False`), the graph is
captured once, and each replay is followed by a synchronise and `report_to_profiler()`; without one, each
enqueue reports by itself.
"""
from __future__ import annotations

from pathlib import Path

from stages import inputs as model_inputs
from stages.gpu import harness
from stages.gpu.cuda import call, rt
from stages.tensorrt import inspector, runtime

SOURCE = "tensorrt-profiler"
LAYER_INFO_FILE = "layer_info.json"


def layers(engine: Path, reference: Path, feeds: dict, seed: int, iterations: int, cuda_graph: bool, out_dir: Path
           ) -> tuple[list[dict], dict]:
    """Per-layer times over `iterations` profiled inferences on seeded inputs, joined with the inspector's layer
    information: layers rows and info."""
    from stages.gpu import session

    built = runtime.Engine(engine)
    specs, sizes = model_inputs.model_specs(reference, feeds), model_inputs.sizes(feeds)
    shapes = built.input_shapes(specs, sizes)
    lane = stream = None
    try:
        lane = built.context(shapes)
        stream = runtime.new_stream()
        lane.write(model_inputs.random_inputs(specs, sizes, seed + model_inputs.SEED_BENCHMARK))
        with session.exclusive():
            times, note = layer_times(built, lane, stream, iterations, cuda_graph)
        layer_info = inspector.engine_information(built, lane.ctx)
    finally:
        if lane is not None:
            lane.close()
        if stream is not None:
            rt().cudaStreamDestroy(stream)
    (out_dir / LAYER_INFO_FILE).write_text(layer_info)
    layers = inspector.parse(layer_info)
    rows = inspector.rows(times, layers, SOURCE)
    overlap = built.engine.num_aux_streams > 0 or inspector.uses_aux_streams(layers)
    return rows, {"iterations": iterations, "layers": len(rows), "graph_note": note, "layer_info": LAYER_INFO_FILE,
                  "layers_overlap": overlap, "layers_note": inspector.OVERLAP_NOTE if overlap else None}


def recorder(trt):
    """An IProfiler that sums each layer's reported time over the profiled inferences."""
    class LayerTimes(trt.IProfiler):
        def __init__(self):
            trt.IProfiler.__init__(self)  # pybind11 needs the base initialised explicitly
            self.total_ms: dict[str, float] = {}

        def report_layer_time(self, layer_name, ms):
            self.total_ms[layer_name] = self.total_ms.get(layer_name, 0.0) + ms

    return LayerTimes()


def layer_times(built: runtime.Engine, lane: runtime.Context, stream, iterations: int, cuda_graph: bool
                ) -> tuple[dict[str, float], str | None]:
    """Mean time per inference of each layer over `iterations` profiled inferences, and why no graph was used.

    The order is trtexec's: the profiler is attached (and, for a graph, told not to report on enqueue) before
    the plain enqueue, so nothing TensorRT sets up for profiling lands inside the captured graph."""
    ctx = lane.ctx
    profiler = lane.profiler = recorder(built.trt)  # TensorRT keeps a raw pointer: the lane keeps the object
    ctx.profiler = profiler
    if cuda_graph:
        ctx.enqueue_emits_profile = False
    lane.enqueue(int(stream))  # the plain enqueue that must precede a capture; not counted
    call("cudaStreamSynchronize", stream)
    if cuda_graph:
        ctx.report_to_profiler()  # flush the plain enqueue's times, then forget them
    profiler.total_ms.clear()
    note, graph_exec = None, None
    if cuda_graph:
        try:
            graph_exec = harness.capture(stream, lane.enqueue)
        except Exception as err:  # noqa: BLE001 - profile without a graph, and say so
            # harness.capture has ended the capture and destroyed its partial graph, and raised the first error:
            # the note names that one, written before anything else can fail.
            note = f"CUDA graph capture failed, profiled plain enqueues: {type(err).__name__}: {str(err)[:300]}"
            rt().cudaGetLastError()  # clear a sticky capture error
            ctx.enqueue_emits_profile = True
    try:
        for _ in range(iterations):
            if graph_exec is not None:
                call("cudaGraphLaunch", graph_exec, stream)
                call("cudaStreamSynchronize", stream)
                if not ctx.report_to_profiler():
                    raise RuntimeError("IExecutionContext.report_to_profiler returned False after a graph launch")
            else:
                lane.enqueue(int(stream))
                call("cudaStreamSynchronize", stream)
    finally:
        if graph_exec is not None:
            rt().cudaGraphExecDestroy(graph_exec)
    if not profiler.total_ms:
        raise RuntimeError("TensorRT's profiler reported no layer times (was the engine built with "
                           "profiling_verbosity=DETAILED?)")
    return {name: ms / iterations for name, ms in profiler.total_ms.items()}, note

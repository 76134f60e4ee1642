"""ONNX Runtime's CUDA provider on a real GPU (onnxruntime-gpu): built on its provider, timed by the harness on each
lane's stream, compared with the CPU provider; and through the CLI, a CUDA point measured end to end beside a
TensorRT-provider point that this machine cannot run (no TensorRT libraries), which must be `unsupported`, saying
how to get it. They skip where this onnxruntime has no CUDA provider (the CPU package)."""
from __future__ import annotations

import time

import numpy as np
import pytest

from pipeline import results
from stages import inputs as model_inputs
from stages.api import Unsupported
from stages.gpu import harness
from stages.gpu.cuda import call
from stages.gpu.cuda import rt as cuda_rt
from stages.onnxruntime import build, opened, providers, session
from stages.onnxruntime.workload import OrtWorkload
from tests.conftest import FAST, run_cli
from tests.test_onnxruntime_provider import BUILD, tiny_model


@pytest.mark.gpu
def test_cuda_builds_on_its_provider_and_the_harness_times_its_kernels_on_the_lane_stream(tmp_path):
    """On a CUDA GPU with onnxruntime-gpu: the build's session got the CUDA provider with use_tf32 off for fp32; the
    harness's events on each lane's stream time the kernels (a run whose work went to another stream would time as
    nearly nothing against the same run timed on the host to completion); the outputs match the CPU provider's."""
    try:
        providers.check_here("cuda")
    except Unsupported as err:
        pytest.skip(str(err))
    src = tiny_model(tmp_path / "tiny.onnx", channels=64, size=128)  # ~19 GFLOP a batch: the kernels dominate
    (tmp_path / "build").mkdir()
    result = build.run({"onnx": src}, {**BUILD, "provider": "cuda"}, tmp_path / "build")
    model = tmp_path / "build" / result.outputs["model"]
    assert result.info["session_providers"].startswith("CUDAExecutionProvider")
    rt = opened.open_build(model, src)
    try:
        assert rt.device == "cuda" and rt.runner.sess.get_provider_options()["CUDAExecutionProvider"]["use_tf32"] == "0"
        feeds = {"batch_size": 32, "axes": {}, "inputs": {}, "input_shape": None}
        lanes = rt.lanes(rt.specs(feeds), model_inputs.sizes(feeds), seed=0, streams=2)
        graph, why = rt.cuda_graph(True, lanes)
        m = harness.run(lanes, harness.Settings(warmup_ms=50, duration_s=0.3, min_iterations=20, cuda_graph=graph))
        assert not m.cuda_graph and why
        gpu_ms = float(np.median(m.trials[0].times["gpu_compute"]))
        # the harness has destroyed its streams: the same run on a stream of ours, timed on the host to completion
        stream = call("cudaStreamCreateWithFlags", cuda_rt().cudaStreamNonBlocking)
        own = OrtWorkload(dict(lanes[0].feeds), lambda s: session.open_built(model, s))
        try:
            own.enqueue(int(stream))
            call("cudaStreamSynchronize", stream)
            host = []
            for _ in range(20):
                t0 = time.perf_counter()
                own.sess.run_with_iobinding(own.binding)  # no run options: ORT waits for the work
                host.append((time.perf_counter() - t0) * 1e3)
            # two lanes share the GPU, so a lane's kernels may take up to about twice as long
            assert 0.3 * float(np.median(host)) < gpu_ms < 2.5 * float(np.median(host)), (gpu_ms, host)
            expected = session.open_reference(src).run(None, dict(own.feeds))[0]
            np.testing.assert_allclose(own.outputs[0].numpy(), expected, rtol=1e-3, atol=1e-3)
        finally:
            own.close()
            call("cudaStreamDestroy", stream)
    finally:
        rt.close()


@pytest.mark.gpu
def test_the_cli_measures_a_cuda_provider_point_with_the_gpu_harness(workdir):
    try:
        providers.check_here("cuda")
    except Unsupported as err:
        pytest.skip(str(err))
    proc = run_cli(["-m", "backend=onnxruntime", "backend.provider=cuda,tensorrt", "precision=fp16", "batch_size=64",
                    "benchmark.duration_s=0.5", *FAST[1:], "hydra.sweep.dir=sweep"], workdir, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r = results.load(workdir / "sweep")
    runs = r.runs.set_index("provider")
    cuda, trt = runs.loc["cuda"], runs.loc["tensorrt"]
    assert cuda.status == "ok", cuda.error
    assert cuda.build_session_providers.startswith("CUDAExecutionProvider")
    s = r.summary[r.summary.run_id == cuda.run_id].set_index(["metric", "stat"])["value"]
    assert s[("gpu_compute", "median")] > 0 and s[("enqueue", "median")] > 0  # the harness's events, not the host
    assert cuda.benchmark_sm_clock_median_mhz > 100
    acc = r.accuracy[r.accuracy.run_id == cuda.run_id].set_index("metric")["value"]
    assert acc["top1_agreement"] >= 0.9  # fp16 on the GPU against the fp32 reference
    if trt.status != "ok":  # where TensorRT's libraries are found the point runs; here they are not
        assert trt.status == "unsupported" and "TensorrtExecutionProvider" in trt.error and "tensorrt" in trt.error

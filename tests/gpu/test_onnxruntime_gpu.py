"""ONNX Runtime's CUDA provider on a real GPU (onnxruntime-gpu): built on its provider, timed by the harness on each
lane's stream, compared with the CPU provider. Written without a GPU to run it on: it has not run yet."""
from __future__ import annotations

import time

import numpy as np
import pytest

from stages import inputs as model_inputs
from stages.api import Unsupported
from stages.gpu import harness
from stages.gpu.cuda import call
from stages.gpu.cuda import rt as cuda_rt
from stages.onnxruntime import build, opened, providers, session
from stages.onnxruntime.workload import OrtWorkload
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

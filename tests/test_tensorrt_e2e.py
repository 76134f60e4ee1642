"""The tensorrt backend end to end on tiny_cnn, through the real CLI: build, benchmark, profile, validate.

Needs TensorRT's builder and an NVIDIA GPU (NGC's nvcr.io/nvidia/tensorrt container, see the Dockerfile); skips
anywhere else. None of these tests has run yet: this project has not had a machine with TensorRT.
"""
import pytest

pytestmark = pytest.mark.tensorrt  # and a GPU, checked below with NVML (no torch needed)
pytest.importorskip("tensorrt")

from pipeline import results  # noqa: E402
from stages.availability import gpu_count  # noqa: E402
from tests.conftest import FAST, run_cli  # noqa: E402

if not gpu_count():
    pytest.skip("needs an NVIDIA GPU", allow_module_level=True)


def run(workdir, *args):
    proc = run_cli(["backend=tensorrt", *FAST, *args], workdir, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return results.load(workdir / "outputs")


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_build_benchmark_profile_validate(workdir, precision):
    r = run(workdir, f"precision={precision}", "batch_size=8")
    row = r.runs.iloc[0]
    assert row.status == "ok", row.error
    assert row.build_engine_bytes > 0 and row.build_timing_cache == "created" and row.build_tf32 == False  # noqa: E712
    assert row.benchmark_cuda_graph == True and row.benchmark_device_memory_bytes >= 0  # noqa: E712
    s = r.summary.set_index(["metric", "stat"])["value"]
    assert s[("gpu_compute", "median")] > 0 and s[("throughput", "qps")] > 0
    assert len(r.gpu) >= 2
    layers = r.layers
    assert len(layers) > 0 and set(layers.source) == {"tensorrt-profiler"}
    assert layers.share.sum() == pytest.approx(1.0) and (layers.time_ms > 0).any()
    assert layers.layer_type.notna().any() and layers.tactic.notna().any()  # joined with the inspector's JSON
    acc = r.accuracy.set_index("metric")["value"]
    assert acc["top1_agreement"] >= 0.9 and acc["rel_l2_err"] < (1e-3 if precision == "fp32" else 2e-2)


def test_timing_cache_is_shared_and_engines_are_cached(workdir):
    first = run(workdir).runs.iloc[0]
    assert first.build_cache == "miss" and first.build_timing_cache == "created"
    again = run(workdir, "backend.optimization_level=2").runs.sort_values("started").iloc[-1]
    assert again.build_cache == "miss" and again.build_timing_cache == "loaded"
    assert list((workdir / "outputs/cache/timing_caches").glob("*/timing.cache"))
    third = run(workdir).runs.sort_values("started").iloc[-1]
    assert third.build_cache == "hit"


def test_aux_streams_and_several_inference_streams(workdir):
    row = run(workdir, "backend.max_aux_streams=2", "benchmark.streams=2", "batch_size=4").runs.iloc[0]
    assert row.status == "ok", row.error
    assert 0 <= row.benchmark_aux_streams <= 2 and row.benchmark_streams == 2
    assert "latency-unreliable" in row.benchmark_verdict


def test_without_cuda_graph_and_with_transfers(workdir):
    r = run(workdir, "benchmark.cuda_graph=false", "benchmark.data_transfers=true", "benchmark.sync=blocking")
    assert r.runs.iloc[0].benchmark_cuda_graph == False  # noqa: E712
    assert {"h2d", "d2h"} <= set(r.summary.metric)

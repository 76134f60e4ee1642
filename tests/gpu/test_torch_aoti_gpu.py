"""The torch build as an AOTInductor package on CUDA, through the real CLI: built once in its own child process,
served from the cache on the re-run, loaded by the measuring stages (each in a child), captured in a CUDA graph,
checked against the fp32 model; what it costs in the tables. The recipes' packages: test_torch_lowp_gpu.py."""
import pytest

from pipeline import results
from tests.conftest import FAST, run_cli

pytestmark = pytest.mark.gpu
POINT = ["backend=torch", "model=tiny_cnn", "precision=bf16", "batch_size=8", "backend.compile=default",
         "benchmark.duration_s=0.5", *FAST[1:]]


def test_the_package_on_cuda_is_built_once_then_served(workdir):
    for _ in range(2):
        proc = run_cli(POINT, workdir, timeout=600)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    loaded = results.load(workdir / "outputs")
    runs = loaded.runs.sort_values("started").reset_index(drop=True)
    assert list(runs.status) == ["ok", "ok"], list(runs.error)
    assert list(runs.build_path) == ["aoti", "aoti"], list(runs.build_reason)
    assert list(runs.build_cache) == ["miss", "hit"] and list(runs.compile_path) == ["aoti", "aoti"]
    assert runs.build_aoti_compile_s.iloc[0] > 0 and runs.build_package_rel_l2_err.iloc[0] < 5e-2
    assert (runs.benchmark_cuda_graph == True).all(), list(runs.benchmark_cuda_graph_reason)  # noqa: E712
    assert (runs.validate_rel_l2_err < 5e-2).all()  # bf16 package against the fp32 model
    for run_id in runs.run_id:
        s = loaded.summary[loaded.summary.run_id == run_id].set_index(["metric", "stat"])["value"]
        assert s[("artifact", "package")] > 0 and s[("gpu_memory", "peak_build")] > 0
        assert s[("gpu_memory", "peak_timed")] > 0 and s[("gpu_compute", "median")] > 0
    # the layers of a package are its kernels (the profile stage)
    ops = loaded.layers[loaded.layers.layer_type == "kernel"]
    assert len(ops) >= 3 and (ops["time_ms"] > 0).all()

"""int8 / fp8 recipes and compile modes of the torch backend on a GPU, through the real CLI, with their costs.

Short settings on small models (tests/gpu/models.py, tiny_cnn, vit_tiny, resnet50 at batch 8): they check that
every recipe and mode runs its real kernels, records what ran, agrees with the fp32 model, and reports memory and
energy (checked: J = W x s, memory against NVML); the figures themselves come from benchmarks/torch_lowp.py. The
measuring stages run in child processes there (backend.isolate_measurements=auto on CUDA).
"""
import pytest

from pipeline import results
from stages.torch_backend import quantize
from tests.conftest import FAST, run_cli

pytestmark = pytest.mark.gpu
SHORT = ["benchmark.duration_s=0.5", *FAST[1:], "profile.enabled=false"]
MLP = ["model=factory", "model._target_=tests.gpu.models.mlp", "model.input_shape=[256]"]


def capability():
    import torch

    return torch.cuda.get_device_capability()


def summary_of(r, run_id):
    s = r.summary[r.summary.run_id == run_id]
    return {(m, st): v for m, st, v in zip(s.metric, s.stat, s.value)}


def accuracy_of(r, run_id, metric):
    a = r.accuracy[(r.accuracy.run_id == run_id) & (r.accuracy.metric == metric)]
    return float(a.value.iloc[0])


def test_every_recipe_runs_its_kernel_on_a_small_model(workdir):
    """One sweep over every recipe (backend.point), torch.compile'd: each row ok, saying what ran, accurate."""
    recipes = [r for r, spec in quantize.RECIPES.items() if capability() >= spec.min_cc]
    proc = run_cli(["+sweep=gpu_precision", "backend=torch", *MLP, "batch_size=64", "backend.compile=default",
                    f"backend.point={','.join(recipes)}", *SHORT], workdir, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r = results.load(workdir / "outputs")
    runs = r.runs.set_index("point")
    for recipe in recipes:
        row = runs.loc[recipe]
        assert row.status == "ok", (recipe, row.error)
        assert row.precision == quantize.RECIPES[recipe].precision
        # the package (backend.build=aoti) where export and AOTInductor take the recipe, else the in-process path
        print(recipe, row.build_path, row.build_reason)
        built = "build" if row.build_path == "aoti" else "compile"
        assert row.build_path == "aoti" or row.build_reason, recipe
        assert row[f"{built}_quantization"] == f"torchao:{recipe}"
        assert row[f"{built}_quantized_layers"] == 2 and row[f"{built}_kept_layers"] == 2
        assert row.benchmark_cuda_graph == True  # noqa: E712 (pandas boolean): the harness captured it
        assert row.benchmark_cuda_graph_reason.startswith("captured")
        if built == "compile":
            assert row.validate_built_here_first_call_s > 0  # measured in a child, which built the callable again
            # whether torch.compile's cache takes torchao's tensor subclasses is for the benchmark to report
            assert row.compile_inductor_cache in ("miss", "hit", "partial", "none")
        assert accuracy_of(r, row.run_id, "cosine") > 0.98, recipe
        s = summary_of(r, row.run_id)
        assert s[("gpu_compute", "median")] > 0
        assert s[("gpu_memory", "peak_timed")] > 0 and s[("gpu_memory", "peak_build")] > 0
        assert s[("gpu_memory", "weights")] < s[("artifact", "weights_file")]  # quantized: smaller than fp32
        assert s[("energy", "per_inference")] > 0 and s[("energy", "inferences_per_joule")] > 0
        assert 10 < s[("power", "mean_timed")] <= s[("power", "cap")] * 1.2
        assert row.benchmark_energy_jws_ratio > 0 and row.benchmark_memory_check == "ok", row.benchmark_memory_check
        assert s[("gpu_memory", "graph_pools")] > 0  # the graph's pool, counted
        assert s[("gpu_memory", "peak_timed")] >= s[("gpu_memory", "peak_allocated_timed")]
        if quantize.RECIPES[recipe].static:
            assert row[f"{built}_calibration_samples"] == 64


def test_recipes_below_their_compute_capability_say_so(workdir):
    low = [r for r, spec in quantize.RECIPES.items() if capability() < spec.min_cc]
    if not low:
        pytest.skip(f"this GPU ({capability()}) runs every recipe")
    proc = run_cli(["+sweep=gpu_precision", "backend=torch", *MLP, f"backend.point={','.join(low)}",
                    "backend.compile=eager", *SHORT], workdir)
    assert proc.returncode == 0, proc.stdout[-3000:]
    for row in results.load(workdir / "outputs").runs.itertuples():
        assert row.status == "unsupported" and "compute capability" in row.error


@pytest.mark.parametrize("model, point, extra, cosine", [
    ("vit_tiny", "fp8_static", [], 0.97),                                   # 3-d activations, static scales
    ("resnet50", "int8_dynamic", ["backend.channels_last=true"], 0.9),     # 1x1 convolutions as Linear, NHWC
])
def test_a_recipe_on_a_real_architecture(workdir, model, point, extra, cosine):
    """Eager (the compiled path is the small model's above): torchao's kernels on a real model's shapes."""
    if capability() < quantize.RECIPES[point].min_cc:
        pytest.skip(f"{point} needs compute capability {quantize.RECIPES[point].min_cc}")
    proc = run_cli(["+sweep=gpu_precision", "backend=torch", f"model={model}", "batch_size=8",
                    f"backend.point={point}", "backend.compile=eager", *extra, *SHORT], workdir, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r = results.load(workdir / "outputs")
    row = r.runs.iloc[0]
    assert row.status == "ok", row.error
    assert row.compile_quantization == f"torchao:{point}" and row.compile_quantized_layers > 10
    if model == "resnet50":
        assert row.compile_convs_as_linear == 33
    assert accuracy_of(r, row.run_id, "cosine") > cosine  # random weights: a deep ResNet amplifies the error


def test_every_compile_mode_and_a_warm_rerun(workdir):
    """The in-process path (backend.build=compile: the fallback where no package can be built) in every mode."""
    proc = run_cli(["-m", "backend=torch", "model=tiny_cnn", "precision=fp16", "batch_size=8", "backend.build=compile",
                    "backend.compile=eager,default,max-autotune", *SHORT], workdir, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    runs = results.load(workdir / "outputs").runs.set_index("compile")
    expected = {"eager": "eager", "default": "default", "max-autotune": "max-autotune-no-cudagraphs"}
    for mode, torch_mode in expected.items():
        row = runs.loc[mode]
        assert row.status == "ok", (mode, row.error)
        assert row.benchmark_cuda_graph == True, row.benchmark_graph_note  # noqa: E712
        if mode != "eager":
            assert row.compile_torch_mode == torch_mode and row.compile_inductor_cache == "miss"
    cold = runs.loc["default"]
    again = run_cli(["backend=torch", "model=tiny_cnn", "precision=fp16", "batch_size=8", "backend.compile=default",
                     "backend.build=compile", *SHORT], workdir)
    assert again.returncode == 0, again.stdout[-3000:]
    runs = results.load(workdir / "outputs/runs").runs
    warm = runs.iloc[0]
    assert warm.compile_inductor_cache == "hit" and warm.compile_fx_graph_cache_hits >= 1
    assert warm.compile_first_call_s < cold.compile_first_call_s


def test_peak_memory_counts_the_timed_model_not_the_reference(workdir):
    """The fp32 reference stays on the CPU until validation: a bf16 model's timed peak is below its fp32 size."""
    proc = run_cli(["backend=torch", "model=vit_b16", "precision=bf16", "batch_size=1", *SHORT], workdir)
    assert proc.returncode == 0, proc.stdout[-3000:]
    r = results.load(workdir / "outputs")
    s = summary_of(r, r.runs.iloc[0].run_id)
    fp32_mib = s[("artifact", "weights_file")]
    assert s[("gpu_memory", "weights")] == pytest.approx(fp32_mib / 2, rel=0.05)
    assert s[("gpu_memory", "weights")] <= s[("gpu_memory", "peak_timed")] < fp32_mib


def test_an_eager_int8_point_is_not_captured_and_cannot_poison_the_next(workdir):
    """pytorch/ao#4872: torchao's eager int8 path synchronises inside the call. The graph is decided off up front, and
    the point is measured in its own child processes; the bf16 point after it in the same sweep runs with a graph."""
    if capability() < quantize.RECIPES["int8_dynamic"].min_cc:
        pytest.skip("int8_dynamic needs a newer GPU")
    proc = run_cli(["+sweep=gpu_precision", "backend=torch", *MLP, "batch_size=64", "backend.compile=eager",
                    "backend.point=int8_dynamic,bf16", *SHORT], workdir, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    runs = results.load(workdir / "outputs").runs.set_index("point")
    int8, bf16 = runs.loc["int8_dynamic"], runs.loc["bf16"]
    assert int8.status == "ok" and bf16.status == "ok", (int8.error, bf16.error)
    assert int8.benchmark_cuda_graph == False and "pytorch/ao#4872" in int8.benchmark_cuda_graph_reason  # noqa: E712
    assert bf16.benchmark_cuda_graph == True  # noqa: E712

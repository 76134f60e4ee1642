"""int8 / fp8 on the torch backend, its compile modes and compile cache, and the gpu_precision sweep, on CPU.

What needs a GPU (the kernels themselves, energy, memory) is in tests/gpu/test_torch_lowp_gpu.py. Here: the recipe
a (precision, backend.quantization) pair runs and the one-line errors, why a recipe cannot run (CPU, compute
capability, no torchao), which layers a recipe takes, the 1x1-conv rewrite, the recipes themselves on CPU where
torchao imports (its int8 kernels run eagerly on CPU; skipped without torchao), the compile modes through the config,
a real torch.compile hitting its cache on a re-run, and every point of +sweep=gpu_precision.
"""
from __future__ import annotations

import builtins
import copy

import pytest

from stages import api
from stages.api import ParamError, Unsupported
from stages.torch_backend import compile as compile_stage
from stages.torch_backend import quantize
from tests.conftest import FAST, run_cli

torch = pytest.importorskip("torch")

# ------------------------------------------------------------------------------------------------ which recipe


@pytest.mark.parametrize("precision, quantization, recipe", [
    ("fp32", "auto", None), ("bf16", "auto", None), ("fp16", "none", None), ("int8", "auto", "int8_dynamic"),
    ("fp8", "auto", "fp8_dynamic_rowwise"), ("fp8", "fp8_static", "fp8_static"),
    ("int8", "int8_weight_only", "int8_weight_only"),
])
def test_resolve(precision, quantization, recipe):
    assert quantize.resolve(precision, quantization) == recipe


def test_a_recipe_and_a_precision_that_contradict_are_one_line_naming_key_value_and_valid():
    with pytest.raises(ParamError) as err:
        quantize.resolve("fp16", "fp8_dynamic_rowwise")
    message = str(err.value)
    assert "backend.quantization = 'fp8_dynamic_rowwise'" in message and "precision=fp8" in message
    assert "valid with fp16: auto, none" in message and "\n" not in message
    with pytest.raises(ParamError, match="valid with int8: auto, int8_dynamic, int8_static, int8_weight_only"):
        quantize.resolve("int8", "fp8_static")
    with pytest.raises(ParamError, match="backend.quantization = 'none' with precision=fp8.*valid for fp8: auto"):
        quantize.resolve("fp8", "none")
    with pytest.raises(ParamError, match="valid: auto, none, fp8_dynamic_rowwise"):
        quantize.resolve("fp8", "fp4")


def test_every_recipe_has_a_precision_and_the_options_agree_with_the_yaml():
    import yaml

    from stages import torch_backend

    assert set(quantize.AUTO.values()) <= set(quantize.RECIPES)
    assert {r.precision for r in quantize.RECIPES.values()} == {"int8", "fp8"}
    options = torch_backend.OPTIONS
    assert options["quantization"].choices == quantize.CHOICES
    conf = yaml.safe_load(open(api.__file__.replace("stages/api.py", "conf/backend/torch.yaml")))
    declared = {k for k, p in options.items() if not p.optional}
    from pipeline.run import plugins

    assert declared == set(conf) - {"defaults", *plugins.RESERVED}, "OPTIONS and conf/backend/torch.yaml out of step"
    api.check_params(options, {k: conf[k] for k in declared}, "backend")  # the YAML's values are valid
    assert conf["keep_high_precision"] == list(quantize.DEFAULT_KEEP) and conf["quantization"] == "auto"
    compile_params = conf["dag"]["compile"]["params"]
    assert set(compile_params) == set(compile_stage.PARAMS)


@pytest.mark.parametrize("recipe", list(quantize.RECIPES))
def test_no_recipe_on_cpu(recipe):
    with pytest.raises(Unsupported) as err:
        quantize.check_runnable(recipe, "cpu")
    message = str(err.value)
    assert f"backend.quantization={recipe}" in message and "CUDA only" in message and "fake-quant" in message


@pytest.mark.parametrize("recipe, capability, ok", [
    ("fp8_dynamic_rowwise", (8, 6), False), ("fp8_static", (8, 0), False), ("int8_dynamic", (7, 5), False),
    ("int8_weight_only", (7, 5), True), ("int8_dynamic", (8, 0), True), ("fp8_dynamic_tensorwise", (9, 0), True),
])
def test_compute_capability(recipe, capability, ok, monkeypatch):
    _no_torchao(monkeypatch)  # past the capability check, the next reason is the missing torchao
    with pytest.raises(Unsupported) as err:
        quantize.check_runnable(recipe, "cuda", capability)
    if ok:
        assert "torchao does not import" in str(err.value)
    else:
        need = ".".join(map(str, quantize.RECIPES[recipe].min_cc))
        assert f"compute capability {need} or higher" in str(err.value)
        assert f"this GPU has {capability[0]}.{capability[1]}" in str(err.value)


def _no_torchao(monkeypatch):
    real = builtins.__import__

    def refuse(name, *args, **kwargs):
        if name == "torchao" or name.startswith("torchao."):
            raise ImportError("No module named 'torchao'")
        return real(name, *args, **kwargs)
    monkeypatch.setattr(builtins, "__import__", refuse)


def test_without_torchao_says_how_to_get_it(monkeypatch):
    _no_torchao(monkeypatch)
    with pytest.raises(Unsupported) as err:
        quantize.check_runnable("fp8_static", "cuda", (9, 0))
    message = str(err.value)
    assert "backend.quantization=fp8_static" in message and "pip install -e '.[gpu]'" in message
    assert "tests/gpu/wheels.sh" in message


def test_the_compile_stage_refuses_before_building_anything():
    params = {"precision": "fp8", "mode": "default", "channels_last": False, "device": "cpu", "feeds": {},
              "seed": 0, "quantization": "auto"}
    with pytest.raises(Unsupported, match="fp8_dynamic_rowwise"):
        compile_stage.plan(params)
    with pytest.raises(ParamError, match="keep_high_precision"):
        compile_stage.plan({**params, "precision": "fp32", "keep_high_precision": "head"})
    assert compile_stage.plan({**params, "precision": "bf16"}) == ("cpu", None)


# ------------------------------------------------------------------------------------------------ which layers


def vit():
    from stages.models import build_builtin

    return build_builtin("vit_tiny")


def test_vit_keeps_its_patch_embedding_and_head():
    sel = quantize.select(vit(), quantize.DEFAULT_KEEP)
    assert sel.kept == ["patch_embed.proj", "head"]
    assert len(sel.targets) == 12 * 4 and "blocks.0.attn.qkv" in sel.targets and "blocks.11.mlp.fc2" in sel.targets
    assert not sel.convs_as_linear and not sel.other and not sel.unmatched


def test_keep_patterns():
    sel = quantize.select(vit(), ["@last", "blocks.0.*", "*fc2", "nothing*"])
    assert "head" in sel.kept and "blocks.0.attn.qkv" in sel.kept and "blocks.5.mlp.fc2" in sel.kept
    assert "patch_embed.proj" in sel.other  # not kept, but a 16x16 convolution torchao cannot take
    assert sel.unmatched == ["nothing*"]
    assert len(sel.targets) == 12 * 4 - 4 - 11  # block 0's four, and fc2 of the other eleven
    with pytest.raises(ParamError, match="backend.keep_high_precision = 'head'"):
        quantize.select(vit(), "head")


def test_resnet50_pointwise_convolutions_become_targets():
    from stages.models import build_builtin

    sel = quantize.select(build_builtin("resnet50"), quantize.DEFAULT_KEEP)
    assert sel.kept == ["conv1", "fc"]
    assert "layer1.0.conv1" in sel.convs_as_linear and "layer1.0.conv3" in sel.convs_as_linear
    assert "layer1.0.downsample.0" in sel.convs_as_linear       # stride 1
    assert "layer2.0.downsample.0" in sel.other                  # stride 2: not a Linear
    assert "layer1.0.conv2" in sel.other                         # 3x3
    assert len(sel.convs_as_linear) == 16 * 2 + 1


def test_tiny_cnn_has_nothing_to_quantize():
    from stages.models import build_builtin

    with pytest.raises(Unsupported, match="no layer torchao can quantize outside backend.keep_high_precision"):
        quantize.apply(build_builtin("tiny_cnn"), "int8_dynamic", quantize.DEFAULT_KEEP)


@pytest.mark.parametrize("channels_last", [False, True])
def test_a_pointwise_convolution_as_linear_computes_the_same(channels_last):
    from stages.models import build_builtin

    model = build_builtin("resnet50").eval()
    x = torch.randn(2, 3, 64, 64)
    if channels_last:
        model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        expected = model(x)
        sel = quantize.select(model, quantize.DEFAULT_KEEP)
        renamed = quantize.rewrite_convs(model, sel.convs_as_linear)
        got = model(x)
    assert isinstance(model.get_submodule(renamed["layer1.0.conv1"]), torch.nn.Linear)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_summarise_folds_block_indices():
    assert quantize.summarise(["blocks.0.attn.qkv", "blocks.11.attn.qkv", "head", "2"]) == "2,blocks.*.attn.qkv,head"


def test_module_bytes_counts_every_parameter_once():
    lin = torch.nn.Linear(16, 8)
    tied = torch.nn.Sequential(lin, torch.nn.ReLU(), lin)
    assert quantize.module_bytes(tied) == (16 * 8 + 8) * 4


# ------------------------------------------------------------------------------------------------ torchao on CPU


@pytest.fixture
def torchao():
    return pytest.importorskip("torchao.quantization")  # not installed here: pip install -e '.[gpu]'


def calibration_of(batches):
    def calibrate(run):
        with torch.no_grad():
            for x in batches:
                run(x)
        return sum(len(x) for x in batches)
    return calibrate


@pytest.mark.parametrize("recipe", ["int8_dynamic", "int8_weight_only", "int8_static"])
def test_int8_recipes_quantize_the_targets_and_keep_the_rest(torchao, recipe):
    model = vit().to(torch.bfloat16).eval()
    x = torch.randn(2, 3, 224, 224, dtype=torch.bfloat16)
    with torch.no_grad():
        reference = copy.deepcopy(model)(x).float()
    calibrate = calibration_of([torch.randn(2, 3, 224, 224, dtype=torch.bfloat16) for _ in range(2)])
    info = quantize.apply(model, recipe, quantize.DEFAULT_KEEP, calibrate)
    assert info["quantization"] == f"torchao:{recipe}" and info["quantized_layers"] == 48
    assert info["kept_layers"] == 2 and info["keep_high_precision"] == "patch_embed.proj,head"
    assert info["quantized"] == "blocks.*.attn.proj,blocks.*.attn.qkv,blocks.*.mlp.fc1,blocks.*.mlp.fc2"
    assert type(model.head.weight) in (torch.Tensor, torch.nn.Parameter)             # kept in bf16
    assert type(model.blocks[0].attn.qkv.weight) not in (torch.Tensor, torch.nn.Parameter)
    assert ("calibration_samples" in info) == (recipe == "int8_static")
    with torch.no_grad():
        out = model(x).float()
    cosine = torch.nn.functional.cosine_similarity(out.flatten(), reference.flatten(), dim=0)
    assert cosine > 0.99, cosine
    assert quantize.module_bytes(model) < 0.6 * quantize.module_bytes(vit().to(torch.bfloat16))  # int8 weights


def test_int8_on_resnet50_through_its_pointwise_convolutions(torchao):
    from stages.models import build_builtin

    model = build_builtin("resnet50").to(torch.bfloat16).eval()
    info = quantize.apply(model, "int8_weight_only", quantize.DEFAULT_KEEP)
    assert info["convs_as_linear"] == 33 and info["quantized_layers"] == 33
    assert info["quantized"] == ",".join(sorted([f"layer{i}.*.conv{c}" for i in range(1, 5) for c in (1, 3)]
                                                + ["layer1.*.downsample.*"]))
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64, dtype=torch.bfloat16)).shape == (1, 1000)


# ------------------------------------------------------------------------------------------------ compile modes


def compose(*overrides):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    from pipeline.config import paths, schema

    schema.register()  # the `schema` node conf/config.yaml builds on

    with initialize_config_dir(config_dir=paths.CONF_DIR, version_base="1.3"):
        cfg = hydra_compose(config_name="config", overrides=list(overrides))
    return OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)


@pytest.mark.parametrize("mode, torch_mode", [("eager", "eager"), ("default", None),
                                              ("max-autotune", "max-autotune-no-cudagraphs")])
def test_each_compile_mode_composes_and_maps(mode, torch_mode):
    from pipeline.run import plugins, runner

    config = compose("backend=torch", "model=tiny_cnn", f"backend.compile={mode}")
    plugins.check(config["backend"])
    compile_node = next(n for n in runner.plan(config["backend"]["dag"], config["backend"]) if n.name == "compile")
    assert compile_node.params["mode"] == mode
    api.check_params(compile_node.declared, compile_node.params, "compile")  # PARAMS and the options it takes
    assert (compile_stage.MODES.get(mode, "eager")) == torch_mode


def test_reduce_overhead_is_not_offered():
    from pipeline.config.schema import ConfigError
    from pipeline.run import plugins

    assert "reduce-overhead" not in compile_stage.MODES
    config = compose("backend=torch", "backend.compile=reduce-overhead")
    with pytest.raises(ConfigError, match="backend.compile = 'reduce-overhead': valid: eager, default, max-autotune"):
        plugins.check(config["backend"])


@pytest.mark.slow  # a real torch.compile of tiny_cnn on CPU, twice (about 30 s, then a few)
def test_a_compile_uses_the_pipelines_cache_and_a_rerun_hits_it(tmp_path):
    import json

    from stages.torch_backend import compiled, inductor
    from stages.torch_backend import model as model_stage

    api.set_shared_root(tmp_path / "shared")
    feeds = {"batch_size": 2, "axes": {}, "inputs": {}, "input_shape": None, "data": {}}
    model_stage.run({}, {"model": {"name": "tiny_cnn", "source": "builtin"}, "seed": 0, "feeds": feeds}, tmp_path)
    params = {"precision": "fp32", "mode": "default", "channels_last": False, "device": "cpu", "feeds": feeds,
              "seed": 0, "quantization": "auto", "keep_high_precision": ["@first", "@last"]}
    try:
        first = compile_stage.run({"weights": tmp_path / model_stage.WEIGHTS}, params, tmp_path)
        second = compile_stage.run({"weights": tmp_path / model_stage.WEIGHTS}, params, tmp_path)
    finally:
        api.set_shared_root(None)
    cache = (tmp_path / "shared" / inductor.SHARED).resolve()
    assert first.info["cache_dir"] == str(cache) and (cache / "fxgraph").is_dir()
    assert first.info["inductor_cache"] == "miss" and first.info["fx_graph_cache_misses"] >= 1
    assert second.info["inductor_cache"] == "hit" and second.info["fx_graph_cache_hits"] >= 1
    assert second.info["first_call_s"] < first.info["first_call_s"]
    assert first.info["torch_mode"] == "default" and first.info["quantization"] == "none"
    rows = {(r["metric"], r["stat"]) for r in first.tables["summary"]}
    assert {("artifact", "weights_file"), ("gpu_memory", "weights")} <= rows
    handle = json.loads((tmp_path / compile_stage.FILE).read_text())
    assert handle["quantization"] == "none" and compiled.lookup(tmp_path / compile_stage.FILE).fn is not None


# ------------------------------------------------------------------------------------------------ the sweep


def sweep_points():
    import yaml

    conf = yaml.safe_load(open(api.__file__.replace("stages/api.py", "conf/sweep/gpu_precision.yaml")))
    params = conf["hydra"]["sweeper"]["params"]
    return params["backend.point"].split(","), params["backend.compile"].split(","), conf["backend"]["points"]


def test_the_sweep_covers_every_precision_and_recipe_once():
    points, modes, table = sweep_points()
    assert sorted(points) == sorted(table)
    assert sorted({table[p]["precision"] for p in points}) == sorted(["fp32", "tf32", "fp16", "bf16", "int8", "fp8"])
    assert sorted(table[p]["quantization"] for p in points if table[p]["quantization"] != "none") == \
        sorted(quantize.RECIPES)
    assert modes == ["eager", "default", "max-autotune"]


def test_every_point_of_the_sweep_composes_and_says_why_it_cannot_run_on_cpu():
    from pipeline.run import plugins, runner

    points, modes, table = sweep_points()
    for point in points:
        for mode in modes:
            config = compose("+sweep=gpu_precision", "model=tiny_cnn", f"backend.point={point}",
                             f"backend.compile={mode}")
            assert config["backend"]["name"] == "torch"
            assert config["precision"]["name"] == table[point]["precision"]
            assert config["backend"]["quantization"] == table[point]["quantization"]
            plugins.check(config["backend"])
            node = next(n for n in runner.plan(config["backend"]["dag"], config["backend"]) if n.name == "compile")
            params = {**node.params, "device": "cpu"}
            recipe = table[point]["quantization"]
            if recipe == "none" and point != "tf32":
                assert compile_stage.plan(params) == ("cpu", None)
            else:
                with pytest.raises(Unsupported, match=recipe if recipe != "none" else "TF32"):
                    compile_stage.plan(params)


@pytest.mark.slow  # the real CLI: every point of the sweep on CPU, eager
def test_the_sweep_through_the_cli_on_cpu(workdir):
    from pipeline import results

    proc = run_cli(["+sweep=gpu_precision", "backend=torch", "model=tiny_cnn", "backend.device=cpu",
                    "backend.compile=eager", "profile.enabled=false", *FAST], workdir, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    runs = results.load(workdir / "outputs/sweeps/gpu_precision").runs.set_index("point")
    points, _, table = sweep_points()
    assert sorted(runs.index) == sorted(points)
    for point in points:
        row = runs.loc[point]
        assert row.precision == table[point]["precision"] and row.quantization == table[point]["quantization"]
        if point in ("fp32", "fp16", "bf16"):
            assert row.status == "ok", row.error
            assert row.compile_quantization == "none"
        else:
            assert row.status == "unsupported", (point, row.status, row.error)
            assert ("TF32" if point == "tf32" else f"backend.quantization={point}") in row.error
    assert "best:" in proc.stdout
    report = (next((workdir / "outputs/sweeps/gpu_precision").iterdir()) / "report" / "index.html").read_text()
    assert "Costs beyond latency" in report and "weights file (MiB)" in report


# ------------------------------------------------------------------------------------------------ the build's pieces


def test_calibration_batches_are_the_onnx_backends_samples_in_run_sized_batches():
    import numpy as np

    from stages import inputs as model_inputs
    from stages.sources import _image_spec

    specs = [_image_spec((3, 8, 8))]
    feeds = {"batch_size": 24, "axes": {}, "inputs": {}, "input_shape": None, "data": {}}
    from stages import datasets

    batches = list(datasets.calibration(specs, feeds, {"samples": 64, "data": None}, seed=3, batch=24))
    assert [len(b["input"]) for b in batches] == [24, 24, 16]
    same = model_inputs.random_inputs(specs, {"batch": 64}, 3 + model_inputs.SEED_CALIBRATION)["input"]
    np.testing.assert_array_equal(np.concatenate([b["input"] for b in batches]), same)  # what convert calibrates on


def test_the_reference_waits_on_the_cpu_until_it_is_called():
    from stages.torch_backend import compiled

    layer = torch.nn.Linear(4, 4)
    assert compiled.on_device(layer, "cpu") is layer
    lazy = compiled.on_device(torch.nn.Linear(4, 4), "meta")  # a device this CPU machine has: 'meta'
    assert lazy.inner.weight.device.type == "cpu"
    with torch.inference_mode():  # as validation calls it
        assert lazy(torch.randn(2, 4, device="meta")).shape == (2, 4)
    assert lazy.inner.weight.device.type == "meta" and not lazy.inner.weight.is_inference()


@pytest.mark.slow  # torch.compile of a small model with torchao's int8 twice on CPU (about 20 s); needs torchao
def test_the_compile_stage_quantizes_calibrates_compiles_and_caches(torchao, tmp_path, monkeypatch):
    """The stage's whole recipe path on CPU, its kernel check bypassed: CPU is refused only because its timings
    would not be of an int8 kernel (see test_no_recipe_on_cpu); what the stage does with a recipe is the same."""
    from stages.torch_backend import model as model_stage

    monkeypatch.setattr(quantize, "check_runnable", lambda *args, **kwargs: None)
    api.set_shared_root(tmp_path / "shared")
    feeds = {"batch_size": 8, "axes": {}, "inputs": {}, "input_shape": [256], "data": {}}
    spec = {"name": "factory", "source": "factory", "_target_": "tests.gpu.models.mlp", "kwargs": {},
            "input_shape": [256], "inputs": {}}
    model_stage.run({}, {"model": spec, "seed": 0, "feeds": feeds}, tmp_path)
    params = {"precision": "int8", "mode": "default", "channels_last": False, "device": "cpu", "feeds": feeds,
              "seed": 0, "keep_high_precision": ["@first", "@last"],
              "calibration": {"method": "max", "samples": 20, "data": None}}
    try:
        static = compile_stage.run({"weights": tmp_path / model_stage.WEIGHTS},
                                   {**params, "quantization": "int8_static", "mode": "eager"}, tmp_path)
        cold = compile_stage.run({"weights": tmp_path / model_stage.WEIGHTS},
                                 {**params, "quantization": "int8_weight_only"}, tmp_path)
        warm = compile_stage.run({"weights": tmp_path / model_stage.WEIGHTS},
                                 {**params, "quantization": "int8_weight_only"}, tmp_path)
    finally:
        api.set_shared_root(None)
    assert static.info["quantization"] == "torchao:int8_static" and static.info["calibration_samples"] == 20
    assert static.info["quantized_layers"] == 2 and static.info["keep_high_precision"] == "0,6"
    assert cold.info["inductor_config"].startswith("torchao recommended") and cold.info["inductor_cache"] == "miss"
    assert warm.info["inductor_cache"] == "hit" and warm.info["first_call_s"] < cold.info["first_call_s"]
    weights = {(r["metric"], r["stat"]): r["value"] for r in cold.tables["summary"]}
    assert weights[("gpu_memory", "weights")] < 0.6 * weights[("artifact", "weights_file")]

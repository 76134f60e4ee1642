"""The precision planner on the torch backend, on CPU: the layer comparison by module hooks finds a layer whose error is
injected on purpose (a perturbed weight in the converted copy; an fp16 overflow to inf), the torch nodes join the DAG
under +plan=mixed_precision, and the plan's override (backend.keep_high_precision) composes the point the planner
builds, with a stable config_hash, and reaches the torch build's params. The loop with measured int8 variants needs
torchao on CUDA: tests/gpu/test_plan_torch_gpu.py."""
import json

import numpy as np
import pytest
import torch

from pipeline.analysis import plan as planmod
from pipeline.analysis import select
from pipeline.run import job, planner, runner
from stages.torch_backend import build
from stages.torch_backend import layer_errors as torch_layer_errors
from tests.conftest import FAST, run_cli
from tests.test_config_hash import config

WIDTH, BATCH = 16, 8
INT8 = ["backend=torch", "model=outlier_mlp", "precision=int8"]


def _chain(scale_fc2: float = 1.0):
    """fc1 -> relu1 -> fc2 -> relu2 -> fc3, seeded; fc2's weight times `scale_fc2`."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = torch.nn.Sequential()
        for i in (1, 2, 3):
            model.add_module(f"fc{i}", torch.nn.Linear(WIDTH, WIDTH))
            if i < 3:
                model.add_module(f"relu{i}", torch.nn.ReLU())
    with torch.no_grad():
        model.fc2.weight *= scale_fc2
    return model.eval()


def _batches(scale: float = 1.0):
    rng = np.random.default_rng(1)
    return ({"x": (scale * rng.normal(size=(BATCH, WIDTH))).astype(np.float32)} for _ in range(2))


def test_the_layer_whose_weight_is_perturbed_is_found():
    reference = _chain()
    converted = _chain()
    with torch.no_grad():  # the injected error: fc2 of the converted copy only
        converted.fc2.weight.add_(0.5 * torch.randn_like(converted.fc2.weight))
    rows, info = torch_layer_errors.compare(reference, converted, _batches(), 0.05, "cpu", torch.float32)
    by_layer = {r["layer"]: r for r in rows}
    assert [r["layer"] for r in rows] == ["fc1", "relu1", "fc2", "relu2", "fc3"]  # the order they run in
    assert by_layer["fc1"]["rel_err"] == 0 and by_layer["relu1"]["rel_err"] == 0  # before the injection: exact
    assert [r["layer"] for r in rows if r["first_over"]] == ["fc2"] and info["first_over"] == "fc2"
    assert by_layer["fc2"]["input_rel_err"] == 0 and by_layer["fc2"]["cosine"] < 0.999
    assert by_layer["fc3"]["input_rel_err"] == by_layer["relu2"]["rel_err"] > 0.05  # handed on, not added by fc3
    assert by_layer["fc2"]["op_type"] == "Linear" and not any(r["quantized"] for r in rows)
    assert info["unmatched"] == 0 and info["layers"] == 5
    clean, info = torch_layer_errors.compare(reference, _chain(), _batches(), 0.05, "cpu", torch.float32)
    assert info["first_over"] is None and max(r["rel_err"] for r in clean) == 0


def test_an_fp16_overflow_is_the_first_layer_over():
    """fc2 (weights x 1e5) computes values past fp16's 65504: inf in fp16 from fc2 on, finite in fp32."""
    reference = _chain(scale_fc2=1e5)
    converted, extra = torch_layer_errors.convert(reference, "fp16", None, [], "cpu")
    assert next(converted.parameters()).dtype == torch.float16 and extra == {}
    assert next(reference.parameters()).dtype == torch.float32  # a copy: the reference is untouched
    rows, info = torch_layer_errors.compare(reference, converted, _batches(scale=10.0), 0.05, "cpu", torch.float16)
    by_layer = {r["layer"]: r for r in rows}
    assert info["first_over"] == "fc2" and by_layer["fc2"]["inf"] > 0
    assert by_layer["fc1"]["inf"] == 0 and by_layer["fc1"]["rel_err"] < 0.05  # fp16 rounding only
    assert not by_layer["fc1"]["first_over"]


def test_a_module_called_twice_is_compared_per_call():
    class Twice(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(WIDTH, WIDTH)
            self.act = torch.nn.Tanh()

        def forward(self, x):
            return self.act(self.fc(self.act(x)))

    reference = Twice().eval()
    rows, _ = torch_layer_errors.compare(reference, torch_layer_errors.convert(reference, "bf16", None, [], "cpu")[0],
                                         _batches(), 0.05, "cpu", torch.bfloat16)
    assert [r["tensor"] for r in rows] == ["act", "fc", "act#2"] and all(r["rel_err"] > 0 for r in rows)


def test_the_torch_nodes_join_the_dag_only_under_the_plan():
    plain = config(*INT8)
    planned = config("+plan=mixed_precision", *INT8)
    assert "layer_errors" not in plain["backend"]["dag"]
    node = planned["backend"]["dag"]["layer_errors"]
    assert node["stage"] == "stages.torch_backend.layer_errors" and node["inputs"] == {"weights": "model.weights"}
    assert "diagnose" not in planned["backend"]["dag"]  # the ONNX backends' marked graphs are theirs alone
    nodes = {n.name: n for n in runner.plan(planned["backend"]["dag"], planned["backend"])}  # it validates
    assert {"device", "quantization", "keep_high_precision"} <= set(nodes["layer_errors"].declared)
    onnx = config("+plan=mixed_precision", "model=outlier_mlp")  # the plan's default backend keeps its nodes
    assert onnx["backend"]["name"] == "onnxruntime"
    assert onnx["backend"]["dag"]["layer_errors"]["stage"] == "stages.layer_errors" and "diagnose" in onnx[
        "backend"]["dag"]


def test_the_torch_plan_is_a_backend_keep_high_precision_override_that_composes_its_variant():
    planned = config("+plan=mixed_precision", *INT8)
    key = planner.keep_key(planned)
    assert key.paths == ("backend.keep_high_precision",) and key.present and key.base == ("@first", "@last")
    override = key.override(["fc2"])
    assert override == 'backend.keep_high_precision=["@first","@last","fc2"]'  # the point's own kept layers stay
    variant = planner.variant_config(planned, ["fc2"])
    composed = config(*INT8, override)
    # the planner's variant is the config the override composes, and composing it again gives the same hash
    assert job.config_hash(variant) == job.config_hash(composed) == job.config_hash(config(*INT8, override))
    assert job.config_hash(composed) != job.config_hash(config(*INT8))
    assert "layer_errors" not in variant["backend"]["dag"] and "layer_errors" in planned["backend"]["dag"]
    # the key reaches the build: the runner hands backend.keep_high_precision to the build stage, whose cache key
    # holds the layers it resolves to
    params = runner.keyed_dag(variant["backend"]["dag"], variant["backend"])["build"]["params"]
    assert params["keep_high_precision"] == ["@first", "@last", "fc2"]
    assert build.key_extra({**params, "quantization": "auto"})["keep_high_precision"] == ["fc1", "fc2", "head"]
    chosen = planmod.choose("q", "int8", select.Rule(),
                            [planmod.Option("int8 + keep fc2", "v", "int8", ["fc2"], 1.0, "ms", 0.01, "rel_l2_err",
                                            True)], [], key)
    assert chosen.override() == override and chosen.to_json()["key"] == "backend.keep_high_precision"


def test_the_onnx_key_is_unchanged():
    planned = config("+plan=mixed_precision", "model=outlier_mlp", "precision=int8")
    key = planner.keep_key(planned)
    assert not key.present and key.base == () and key.override(["node_linear_1"]) == (
        '+convert.keep_high_precision=["node_linear_1"]')
    variant = planner.variant_config(planned, ["node_linear_1"])
    assert variant["backend"]["dag"]["convert"]["params"]["keep_high_precision"] == ["node_linear_1"]
    composed = config("backend=onnxruntime", "model=outlier_mlp", "precision=int8", key.override(["node_linear_1"]))
    assert job.config_hash(variant) == job.config_hash(composed)


def test_a_comparison_stage_without_a_key_cannot_be_planned():
    planned = config("+plan=mixed_precision", *INT8)
    planned["backend"]["dag"]["layer_errors"]["stage"] = "stages.validate"
    with pytest.raises(planner.PlanError, match="stages.validate declares no PLAN_KEEP"):
        planner.keep_key(planned)


@pytest.mark.slow
def test_the_torch_plan_sweep_on_cpu_compares_layers_and_says_why_it_cannot_plan(workdir):
    """On CPU the torch int8 point is unsupported (torchao's kernels are CUDA only): fp32 and fp16 get their layer
    tables, and the planner says there is no quantized point to plan from."""
    from pipeline import results

    proc = run_cli(["+plan=mixed_precision", "backend=torch", "model=outlier_mlp", "backend.device=cpu",
                    "hydra.sweep.dir=sweep", "cache.dir=cache", "report.enabled=false", *FAST], workdir, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    loaded = results.load(workdir / "sweep")
    runs = loaded.runs.set_index("precision")
    assert runs.loc["int8", "status"] == "unsupported" and list(runs.loc[["fp32", "fp16"], "status"]) == ["ok"] * 2
    errors = loaded.layer_errors
    fp16 = errors[errors["run_id"] == runs.loc["fp16", "run_id"]]
    assert list(fp16["layer"]) == ["fc1", "relu1", "fc2", "relu2", "fc3", "relu3", "head"]
    assert (fp16["rel_err"] > 0).all() and (fp16["rel_err"] < 0.05).all() and not fp16["first_over"].any()
    assert (errors[errors["run_id"] == runs.loc["fp32", "run_id"]]["rel_err"] == 0).all()
    assert "no ok run of the sweep has quantized layers compared" in proc.stderr
    assert "int8 is unsupported: " in proc.stderr and "on CUDA only" in proc.stderr  # why, from its row
    assert not (workdir / "sweep" / planmod.PLAN_FILE).exists()


def _max_calibrated_int8(module, recipe, keep, calibrate=None):
    """A stand-in for a torchao recipe on CPU, for the planner's loop only (never a measured kernel): every Linear
    outside `keep` gets int8 weights (per row) and int8 activations with one scale per batch, the largest |x| (as a
    max-calibrated per-tensor scale): outlier_mlp's fc2, which reads a few huge channels, is ruined."""
    from stages.torch_backend import quantize

    class Int8Weight(torch.nn.Parameter):
        """A weight of a quantized layer (what `quantized` looks for: a type that is no plain Parameter)."""

    def quantize_input(mod, args):
        x = args[0]
        scale = x.abs().amax().clamp_min(1e-12) / 127
        return ((x / scale).round().clamp(-127, 127) * scale,)

    sel = quantize.select(module, keep)
    for name in sel.targets:
        layer = module.get_submodule(name)
        w = layer.weight.detach()
        scale = w.abs().amax(dim=1, keepdim=True).clamp_min(1e-12) / 127
        layer.weight = Int8Weight((w / scale).round() * scale, requires_grad=False)
        layer.register_forward_pre_hook(quantize_input)
    return {"quantization": "test:max_calibrated_int8", "keep_high_precision": ",".join(sel.kept) or "none"}


def test_the_planner_loop_on_torch_with_a_stand_in_recipe(tmp_path, monkeypatch):
    """The loop of pipeline/run/planner.py on torch points run in this process, torchao's CUDA-only recipe replaced by
    a CPU stand-in: the quantized modules are ranked from the torch layer comparison, the variants keep them through
    backend.keep_high_precision (the point's @first/@last kept too), and the plan is that override."""
    import io

    from pipeline import results
    from pipeline.run import job as jobmod
    from stages.torch_backend import quantize

    monkeypatch.setattr(quantize, "check_runnable", lambda *a, **k: None)
    monkeypatch.setattr(quantize, "apply", _max_calibrated_int8)
    sweep = tmp_path / "sweep"
    common = ["+plan=mixed_precision", "backend=torch", "model=outlier_mlp", "backend.device=cpu",
              f"cache.dir={tmp_path / 'cache'}", "report.enabled=false", "profile.enabled=false", *FAST]
    for num, prec in enumerate(("fp32", "int8")):
        cfg = config(*common, f"precision={prec}")
        outcome = jobmod.run_job(cfg, sweep / str(num), jobmod.JobMeta(sweep="multirun", job=num,
                                                                       overrides=[*common, f"precision={prec}"]))
        assert outcome.status == "ok", outcome.error
    out = io.StringIO()
    chosen = planner.plan_sweep(sweep, candidates=2, out=out)
    loaded = results.load(sweep)
    base = loaded.layer_errors[loaded.layer_errors["run_id"] == chosen.base]
    assert set(base.loc[base["quantized"].astype(bool), "layer"]) == {"fc2", "fc3"}  # fc1, head: @first, @last
    assert base.loc[base["first_over"].astype(bool), "layer"].tolist() == ["fc2"]
    assert [c["layer"] for c in chosen.candidates][:2] == ["fc2", "fc3"]
    assert chosen.plan is not None and chosen.plan.keep == ["fc2"], out.getvalue()
    assert chosen.override() == 'backend.keep_high_precision=["@first","@last","fc2"]'
    variants = results.load(sweep / planmod.PLAN_SWEEP).runs.set_index("run_id")
    assert variants.loc[chosen.plan.run_id, "compile_keep_high_precision"] == "fc1,fc2,head"
    assert json.loads((sweep / planmod.PLAN_FILE).read_text())["key"] == "backend.keep_high_precision"
    point = config(*[o for o in common if o != "+plan=mixed_precision"], "precision=int8", chosen.override())
    assert job.config_hash(point) == variants.loc[chosen.plan.run_id, "config_hash"]

"""The precision planner: where error grows (a layer whose error is injected on purpose is found), the ranking of
quantized layers, the plan's choice, the convert.keep_high_precision key, and the whole loop on a model that full
int8 breaks, with its plan reproduced from the recorded config."""
import json

import numpy as np
import pandas as pd
import pytest

from pipeline.analysis import plan as planmod
from pipeline.analysis import select
from stages import convert, diagnose, layer_errors
from stages.api import StageInputError
from tests.conftest import FAST, run_cli
from tests.test_config_hash import config

WIDTH, BATCH = 16, 8
FINE = 0.05  # an int8 step that covers these activations (up to about 6) finely


def _graphs(tmp_path, coarse_scale: float):
    """An fp32 chain x -> mm1 -> relu1 -> mm2 -> relu2 -> mm3 -> y, and its "converted" twin with a Q/DQ pair before
    mm2 (at `coarse_scale`: the error injected on purpose) and a fine one before mm3, as ModelOpt inserts them:
    the original tensor names survive, the Q/DQ outputs are new."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weights = {f"w{i}": numpy_helper.from_array(rng.normal(size=(WIDTH, WIDTH)).astype(np.float32) / 4, f"w{i}")
               for i in (1, 2, 3)}

    def model(nodes, extra_inits=()):
        graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                                 ["batch", WIDTH])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", WIDTH])],
                                  [*weights.values(), *extra_inits])
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])

    def chain(into_mm2="relu1", into_mm3="relu2"):
        return [helper.make_node("MatMul", ["x", "w1"], ["h1"], name="mm1"),
                helper.make_node("Relu", ["h1"], ["relu1"], name="relu1"),
                helper.make_node("MatMul", [into_mm2, "w2"], ["h2"], name="mm2"),
                helper.make_node("Relu", ["h2"], ["relu2"], name="relu2"),
                helper.make_node("MatMul", [into_mm3, "w3"], ["h3"], name="mm3"),
                helper.make_node("Identity", ["h3"], ["y"], name="out")]

    def qdq(tensor, scale):
        s, z = f"{tensor}_scale", f"{tensor}_zero"
        inits = [numpy_helper.from_array(np.array(scale, np.float32), s),
                 numpy_helper.from_array(np.array(0, np.int8), z)]
        nodes = [helper.make_node("QuantizeLinear", [tensor, s, z], [f"{tensor}_q"], name=f"{tensor}_QuantizeLinear"),
                 helper.make_node("DequantizeLinear", [f"{tensor}_q", s, z], [f"{tensor}_dq"],
                                  name=f"{tensor}_DequantizeLinear")]
        return nodes, inits

    q2, i2 = qdq("relu1", coarse_scale)
    q3, i3 = qdq("relu2", FINE)
    nodes = chain("relu1_dq", "relu2_dq")
    converted = model(nodes[:2] + q2 + nodes[2:4] + q3 + nodes[4:], [*i2, *i3])
    paths = {"reference": tmp_path / "reference.onnx", "model": tmp_path / "model.onnx"}
    onnx.save(model(chain()), str(paths["reference"]))
    onnx.save(converted, str(paths["model"]))
    marked = {name: tmp_path / f"{name}.marked.onnx" for name in paths}
    for name, path in paths.items():
        diagnose.mark_all(path, marked[name])
    return marked


def _batches():
    rng = np.random.default_rng(1)
    return ({"x": np.abs(rng.normal(size=(BATCH, WIDTH))).astype(np.float32)} for _ in range(2))


def test_the_layer_whose_error_is_injected_is_found(tmp_path):
    marked = _graphs(tmp_path, coarse_scale=0.5)
    rows, info = layer_errors.compare(marked["reference"], marked["model"], _batches(), threshold=0.05)
    by_layer = {r["layer"]: r for r in rows}
    assert [r["layer"] for r in rows] == ["mm1", "relu1", "mm2", "relu2", "mm3", "out"]  # the reference's order
    assert by_layer["mm1"]["rel_err"] == 0 and by_layer["relu1"]["rel_err"] == 0  # before the injection: exact
    assert [r["layer"] for r in rows if r["first_over"]] == ["mm2"] and info["first_over"] == "mm2"
    assert by_layer["mm2"]["rel_err"] > 0.05 and by_layer["mm2"]["cosine"] < 0.999
    assert by_layer["mm2"]["quantized"] and by_layer["mm2"]["qdq_nodes"] == (
        "relu1_QuantizeLinear,relu1_DequantizeLinear")
    assert not by_layer["mm1"]["quantized"] and by_layer["mm1"]["nan"] == 0 and by_layer["mm1"]["inf"] == 0
    # the Q/DQ outputs match nothing in the reference; every reference tensor has its twin
    assert info["unmatched"] == 0 and info["extra_tensors"] == 4


def test_nothing_passes_the_threshold_without_the_injection(tmp_path):
    marked = _graphs(tmp_path, coarse_scale=FINE)
    rows, info = layer_errors.compare(marked["reference"], marked["model"], _batches(), threshold=0.05)
    assert info["first_over"] is None and not any(r["first_over"] for r in rows)
    assert max(r["rel_err"] for r in rows) > 0  # quantized, only finely


def test_quantized_layers_are_ranked_by_the_error_they_add(tmp_path):
    marked = _graphs(tmp_path, coarse_scale=0.5)
    rows, _ = layer_errors.compare(marked["reference"], marked["model"], _batches(), threshold=0.05)
    table = pd.DataFrame(rows).assign(run_id="q")
    ranked = planmod.ranking(table, "q")
    assert list(ranked["layer"]) == ["mm2", "mm3"]  # mm1 is not quantized
    mm3 = ranked.set_index("layer").loc["mm3"]
    assert mm3["added"] < mm3["rel_err"]  # what mm3 was handed (mm2's error) is not counted against it
    layers = pd.DataFrame([
        {"run_id": "q", "layer": "fused mm2", "time_ms": 0.5}, {"run_id": "q", "layer": "relu1_QuantizeLinear",
                                                                 "time_ms": 0.25},
        {"run_id": "q", "layer": "relu1_DequantizeLinear", "time_ms": 0.25}, {"run_id": "f", "layer": "mm2 + relu2",
                                                                              "time_ms": 2.0}])
    costs = planmod.layer_costs(layers, ranked, "q", "f")
    assert costs.iloc[0] == pytest.approx(2.0 - 0.5 - 0.5) and np.isnan(costs.iloc[1])  # mm3: profiled nowhere


def _option(name, latency, drop, keep=(), feasible=True):
    return planmod.Option(name, f"run-{name}", "int8" if keep else name, list(keep), latency, "ms", drop,
                          "rel_l2_err", feasible, None if feasible else "too far")


def test_the_plan_is_the_fastest_mixed_build_within_the_bound_weighed_against_uniform():
    rule = select.Rule()
    opts = [_option("fp32", 1.0, 0.0), _option("int8", 0.4, 0.4, feasible=False),
            _option("a", 0.5, 0.01, keep=["a"]), _option("a+b", 0.45, 0.005, keep=["a", "b"]),
            _option("b", 0.3, 0.3, keep=["b"], feasible=False)]
    plan = planmod.choose("run-int8", "int8", rule, opts, [])
    assert plan.plan.keep == ["a", "b"] and plan.best_uniform.name == "fp32" and plan.beats_uniform
    assert plan.override() is None and " beats " in plan.line()  # no key: the backend did not say where it goes
    keyed = planmod.choose("run-int8", "int8", rule, opts, [], planmod.KeepKey(("convert.keep_high_precision",)))
    assert keyed.override() == '+convert.keep_high_precision=["a","b"]'
    slower = planmod.choose("run-int8", "int8", rule, [_option("fp32", 0.2, 0.0), *opts[1:]], [])
    assert not slower.beats_uniform and "does NOT beat the best uniform precision, fp32" in slower.line()
    none = planmod.choose("run-int8", "int8", rule, [o for o in opts if not o.keep or not o.feasible], [])
    assert none.plan is None and none.line().startswith("plan: none")


def test_keep_high_precision_is_exact_node_names_and_keyed_only_when_set(tmp_path):
    marked = _graphs(tmp_path, coarse_scale=0.5)
    assert convert._kept_nodes(marked["reference"], ["mm2"]) == ["mm2$"]  # ModelOpt reads a regex: exactly mm2
    with pytest.raises(StageInputError, match=r"convert.keep_high_precision = 'mm9': not a node"):
        convert._kept_nodes(marked["reference"], ["mm9"])
    params = {"precision": {"convert": "quantize"}, "calibration": {"samples": 4, "data": "x.npz"},
              "feeds": {"batch_size": 2, "axes": {}}}
    assert "keep_high_precision" not in convert.key_extra({**params, "keep_high_precision": None})
    assert convert.key_extra({**params, "keep_high_precision": ["b", "a"]})["keep_high_precision"] == ["a", "b"]
    fp32 = {**params, "precision": {"convert": "none"}, "keep_high_precision": ["a"]}
    assert "keep_high_precision" not in convert.key_extra(fp32)  # all of fp32 is high precision already


def test_config_hash_is_unchanged_without_the_key_and_changes_with_it():
    from pipeline.run import job

    plain = config("backend=onnxruntime", "precision=int8")
    assert plain["backend"]["dag"]["convert"]["params"]["keep_high_precision"] is None
    without = json.loads(json.dumps(plain))
    del without["backend"]["dag"]["convert"]["params"]["keep_high_precision"]  # the DAG before the key existed
    assert job.config_hash(plain) == job.config_hash(without)
    kept = config("backend=onnxruntime", "precision=int8", "+convert.keep_high_precision=[node_linear_1]")
    assert kept["backend"]["dag"]["convert"]["params"]["keep_high_precision"] == ["node_linear_1"]
    assert job.config_hash(kept) != job.config_hash(plain)


def test_plan_refuses_a_sweep_without_a_layer_comparison(workdir):
    proc = run_cli([str(workdir)], workdir, module="pipeline.plan", timeout=120)
    assert proc.returncode == 1 and "no ok run of the sweep has quantized layers compared" in proc.stderr


@pytest.mark.slow
def test_the_plan_restores_what_full_int8_breaks_and_reproduces(workdir):
    from pipeline import results

    proc = run_cli(["+plan=mixed_precision", "model=outlier_mlp", "hydra.sweep.dir=sweep", "cache.dir=cache",
                    "report.enabled=false", *FAST], workdir, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    plan = json.loads((workdir / "sweep" / planmod.PLAN_FILE).read_text())
    loaded = results.load(workdir / "sweep")
    errors = loaded.layer_errors[loaded.layer_errors["run_id"] == plan["base"]]
    first = errors.loc[errors["first_over"].astype(bool), "layer"].tolist()
    # the layer where int8's error first passes the bound is the first candidate, and keeping it is the plan
    assert plan["candidates"][0]["layer"] == first[0] and plan["plan"]["keep"] == first[:1]
    by_name = {o["name"]: o for o in plan["options"]}
    assert {"fp32", "fp16", "int8"} <= set(by_name)
    assert not by_name["int8"]["feasible"] and by_name["int8"]["drop"] > 0.05  # full int8 breaks the bound
    assert plan["plan"]["feasible"] and plan["plan"]["drop"] <= 0.05
    assert ("plan: int8 with" in proc.stdout) and (plan["line"] in proc.stdout)
    assert_plan_reproduces(workdir, plan, ["backend=onnxruntime", "precision=int8", "model=outlier_mlp",
                                           "cache.dir=cache", "report.enabled=false", *FAST], timeout=300)
    # the command on the finished sweep: the variants are kept (same config), the plan is the same
    rerun = run_cli(["sweep"], workdir, module="pipeline.plan", timeout=300)
    assert rerun.returncode == 0 and plan["line"] in rerun.stdout, rerun.stdout[-2000:] + rerun.stderr[-2000:]
    assert len(results.load(workdir / "sweep" / "plan").runs) == len(plan["options"]) - 3
    from pipeline.analysis import report

    page = report.build_report(workdir / "sweep").read_text()
    assert "Error along the depth" in page and "Precision plan" in page and "(the plan)" in page
    assert (workdir / "sweep" / "report" / "layer_errors.png").stat().st_size > 0
    redone = results.load(workdir / "again")
    rel = redone.accuracy[redone.accuracy["metric"] == "rel_l2_err"]["value"].iloc[0]
    assert rel == pytest.approx(plan["plan"]["drop"], rel=1e-6)  # the same build: the same numbers


def assert_plan_reproduces(workdir, plan: dict, overrides: list[str], timeout: int):
    """The emitted override composes the very point the planner measured (same config_hash), and
    `python -m pipeline.reproduce` on that point's job runs it again with the same hash (into workdir/again)."""
    from pipeline import results
    from pipeline.run import job

    point = results.load(workdir / "sweep" / "plan").runs.set_index("run_id").loc[plan["plan"]["run_id"]]
    assert job.config_hash(config(*overrides, plan["override"])) == point["config_hash"]
    job_dir = next(p.parent for p in (workdir / "sweep" / "plan").glob(f"*/{results.JOB_CONFIG}")
                   if plan["plan"]["run_id"] in set(results.load(p.parent, tables=("runs",)).runs["run_id"]))
    again = run_cli([str(job_dir), "--out", "again", "--cache-dir", "cache"], workdir, module="pipeline.reproduce",
                    timeout=timeout)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    report = json.loads((workdir / "again" / "reproduction.json").read_text())[0]
    assert report["config_hash_same"] and report["status"] == {"original": "ok", "new": "ok"}, report
    return point


def test_the_plan_keeps_its_backend_where_auto_would_pick_another(monkeypatch):
    # +plan=mixed_precision names onnxruntime in its defaults list: the command line's `auto` must not replace it
    # (on a GPU machine auto would pick torch or tensorrt); an explicit backend= still wins
    from pipeline.__main__ import resolve_backend
    from pipeline.run import plugins

    monkeypatch.setattr(plugins, "best", lambda conf_dir: ("torch", []))
    assert resolve_backend(["+plan=mixed_precision"]) == ["+plan=mixed_precision"]
    assert resolve_backend(["+plan=mixed_precision", "backend=torch"]) == ["+plan=mixed_precision", "backend=torch"]
    assert resolve_backend(["model=outlier_mlp"]) == ["model=outlier_mlp", "backend=torch"]

"""The precision planner's whole loop on the torch backend, where torchao's int8 kernels run (CUDA): fp32, fp16 and
int8 (int8_dynamic, @first/@last kept in bf16) compared layer by layer with fp32 by module hooks, the quantized modules
ranked, each candidate built and measured as a variant that keeps it in high precision too, and the plan emitted as a
backend.keep_high_precision override that composes, and reproduces, the point the planner measured."""
import json

import pytest

from pipeline import results
from pipeline.analysis import plan as planmod
from tests.conftest import FAST, run_cli
from tests.test_plan import assert_plan_reproduces

pytestmark = pytest.mark.gpu
SHORT = ["benchmark.duration_s=0.5", *FAST[1:], "profile.enabled=false"]


def test_the_torch_plan_restores_what_int8_breaks_and_reproduces(workdir):
    pytest.importorskip("torchao", reason="the int8 recipe needs torchao (pip install -e '.[gpu]')")

    args = ["+plan=mixed_precision", "backend=torch", "model=outlier_mlp", "cache.dir=cache", "report.enabled=false",
            *SHORT]
    proc = run_cli([*args, "hydra.sweep.dir=sweep"], workdir, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    plan = json.loads((workdir / "sweep" / planmod.PLAN_FILE).read_text())
    loaded = results.load(workdir / "sweep")
    errors = loaded.layer_errors[loaded.layer_errors["run_id"] == plan["base"]]
    assert set(errors.loc[errors["quantized"].astype(bool), "layer"]) == {"fc2", "fc3"}  # fc1, head: @first, @last
    first = errors.loc[errors["first_over"].astype(bool), "layer"].tolist()
    assert plan["precision"] == "int8" and plan["key"] == "backend.keep_high_precision"
    assert plan["candidates"][0]["layer"] == first[0] == "fc2" and plan["plan"]["keep"] == ["fc2"]
    by_name = {o["name"]: o for o in plan["options"]}
    assert not by_name["int8"]["feasible"] and plan["plan"]["feasible"]  # full int8 breaks the bound, the plan not
    assert plan["override"] == 'backend.keep_high_precision=["@first","@last","fc2"]'
    point = assert_plan_reproduces(workdir, plan, ["backend=torch", "precision=int8", "model=outlier_mlp",
                                                   "cache.dir=cache", "report.enabled=false", *SHORT], timeout=600)
    assert point["compile_quantization"] == "torchao:int8_dynamic"
    assert point["compile_keep_high_precision"] == "fc1,fc2,head"  # what the override kept, resolved by the recipe

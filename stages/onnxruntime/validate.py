"""Validate stage for ONNX Runtime: the built model against the fp32 export, on the same seeded inputs."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from stages import accuracy
from stages import inputs as model_inputs
from stages.api import StageResult
from stages.onnxruntime import session

VERSION = "1"
OUTPUTS = ()
CACHED = False
REFERENCE = "fp32 export on onnxruntime CPU"


def run(inputs: dict, params: dict, out_dir: Path) -> StageResult:
    built = session.open_built(inputs["model"])
    reference = session.open_reference(inputs["reference"])
    # Each model gets its own input dtypes (a converted model may take fp16); the same seed gives the same values.
    ref_specs, built_specs = (model_inputs.with_input_shape(model_inputs.specs_from_onnx(inputs[k]),
                                                            params.get("input_shape")) for k in ("reference", "model"))
    names = [o.name for o in reference.get_outputs()]
    got: dict[str, list] = {n: [] for n in names}
    want: dict[str, list] = {n: [] for n in names}
    for batch in range(params["batches"]):
        seed = params["seed"] + model_inputs.SEED_VALIDATION + batch
        ref_out = reference.run(names, model_inputs.random_inputs(ref_specs, params["batch_size"], seed))
        built_out = built.run(names, model_inputs.random_inputs(built_specs, params["batch_size"], seed))
        for name, r, c in zip(names, ref_out, built_out):
            want[name].append(r)
            got[name].append(c)
    rows, info = [], {}
    for name in names:
        metrics = accuracy.compare(np.concatenate(want[name]), np.concatenate(got[name]))
        rows += accuracy.rows(name, metrics, REFERENCE)
        if name == names[0]:
            info = {k: metrics[k] for k in ("rel_l2_err", "top1_agreement") if k in metrics}
    return StageResult(info=info, tables={"accuracy": rows})

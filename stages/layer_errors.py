"""Where error grows: every intermediate tensor of a converted graph against the fp32 reference's, on the same
inputs (validate.data where given, else seeded batches), into the `layer_errors` table.

The diagnostic graphs (stages/diagnose.py) have every tensor marked as an output. Tensors are matched by name:
the converted graph keeps the reference's tensor names and adds its own (Q/DQ outputs, casts), which match
nothing; a reference tensor without a twin is counted as unmatched (info `layer_errors_unmatched`). Both graphs
run on ONNX Runtime's CPU provider with its graph optimizations off, so each computes what its graph says.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stages import datasets
from stages import inputs as model_inputs
from stages.api import Param, StageResult

VERSION = "1"
OUTPUTS = ()
CACHED = False
PARAMS = {"feeds": Param(dict), "seed": Param(int), "validation": Param(dict),
          "threshold": Param(float, min=0, doc="relative error that marks the first layer past it")}
_QDQ = ("QuantizeLinear", "DequantizeLinear")
# The precision planner's key (pipeline/run/planner.py): where a point lists the nodes it keeps in high precision, the
# names this stage reports; the first is the override, the second where conf/subgraph/export_convert.yaml hands it to
# the convert node (a resolved config holds both).
PLAN_KEEP = ("convert.keep_high_precision", "backend.dag.convert.params.keep_high_precision")


def run(inputs: dict, params: dict, out_dir: Path) -> StageResult:
    specs = model_inputs.model_specs(inputs["export"], params["feeds"])
    batches = (feeds for feeds, _, _ in
               datasets.validation(specs, params["feeds"], params["validation"], params["seed"]))
    rows, info = compare(inputs["reference"], inputs["model"], batches, params["threshold"])
    return StageResult(info=info, tables={"layer_errors": rows})


@dataclass
class Sums:
    """Running sums over batches of one tensor pair (finite positions only), and the non-finite counts."""
    diff2: float = 0.0
    ref2: float = 0.0
    run2: float = 0.0
    dot: float = 0.0
    max_abs: float = 0.0
    nan: int = 0
    inf: int = 0

    def add(self, ref: np.ndarray, out: np.ndarray) -> None:
        ref, out = ref.astype(np.float64).ravel(), out.astype(np.float64).ravel()
        self.nan += int(np.isnan(out).sum())
        self.inf += int(np.isinf(out).sum())
        ok = np.isfinite(ref) & np.isfinite(out)
        ref, out = ref[ok], out[ok]
        diff = out - ref
        self.diff2 += float(diff @ diff)
        self.ref2 += float(ref @ ref)
        self.run2 += float(out @ out)
        self.dot += float(ref @ out)
        self.max_abs = max(self.max_abs, float(np.abs(diff).max(initial=0.0)))

    @property
    def rel_err(self) -> float:
        return float(np.sqrt(self.diff2 / self.ref2)) if self.ref2 > 0 else float(np.sqrt(self.diff2))

    @property
    def cosine(self) -> float:
        norms = np.sqrt(self.ref2 * self.run2)
        return float(self.dot / norms) if norms > 0 else 1.0


def compare(reference: Path, model: Path, batches, threshold: float) -> tuple[list[dict], dict]:
    """Rows of the `layer_errors` table, in the reference's node order (its depth), and the run's info.

    Per reference node output with a twin in `model`: its relative L2 error and cosine against the reference, the
    NaN/Inf it holds, the largest relative error among the node's inputs (`input_rel_err`: what it was handed, so
    `rel_err - input_rel_err` is what it adds), whether the converted node is quantized (takes a DequantizeLinear
    output) and the Q/DQ nodes that feed it, and `first_over` on the first row whose error passes `threshold`."""
    import onnx

    ref_graph = onnx.load(str(reference), load_external_data=False).graph
    run_graph = onnx.load(str(model), load_external_data=False).graph
    run_outputs = {o.name for o in run_graph.output}
    layers = [(node, out) for node in ref_graph.node for out in node.output if out in run_outputs]
    wanted = sorted({out for _, out in layers})
    sums = {name: Sums() for name in wanted}
    floats: set[str] = set()  # shapes and indices (int64) are no layer's numbers
    ref_sess, run_sess = _session(reference), _session(model)
    for feeds in batches:
        want = dict(zip(wanted, ref_sess.run(wanted, _cast(ref_sess, feeds))))
        got = dict(zip(wanted, run_sess.run(wanted, _cast(run_sess, feeds))))
        for name in wanted:
            if np.issubdtype(want[name].dtype, np.floating):
                floats.add(name)
                sums[name].add(want[name], got[name])
    feeders = _qdq_feeders(run_graph)
    rows, first = [], None
    for depth, (node, out) in enumerate((n, o) for n, o in layers if o in floats):
        s = sums[out]
        handed = [sums[i].rel_err for i in node.input if i in floats]
        row = {"layer": node.name, "tensor": out, "op_type": node.op_type, "depth": depth,
               "rel_err": s.rel_err, "cosine": s.cosine, "max_abs_err": s.max_abs, "nan": s.nan, "inf": s.inf,
               "input_rel_err": max(handed, default=0.0), "quantized": bool(feeders.get(node.name)),
               "qdq_nodes": ",".join(feeders.get(node.name, [])), "first_over": False}
        if first is None and (row["rel_err"] > threshold or s.nan or s.inf):
            row["first_over"], first = True, node.name
        rows.append(row)
    ref_tensors = [out for node in ref_graph.node for out in node.output]
    unmatched = [t for t in ref_tensors if t not in run_outputs]
    info = {"layers": len(rows), "first_over": first, "threshold": threshold, "unmatched": len(unmatched),
            "unmatched_names": ",".join(unmatched[:20]) or None,
            "extra_tensors": len(run_outputs - set(ref_tensors))}
    return rows, info


def _qdq_feeders(graph) -> dict[str, list[str]]:
    """Per node of `graph`, the DequantizeLinear nodes whose outputs it takes and the QuantizeLinear before each."""
    producer = {out: node for node in graph.node for out in node.output}
    feeders: dict[str, list[str]] = {}
    for node in graph.node:
        if node.op_type in _QDQ:
            continue
        for name in node.input:
            dq = producer.get(name)
            if dq is None or dq.op_type != "DequantizeLinear":
                continue
            q = producer.get(dq.input[0])
            feeders.setdefault(node.name, []).extend(
                ([q.name] if q is not None and q.op_type == "QuantizeLinear" else []) + [dq.name])
    return feeders


def _session(path: Path):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # the graph as written, every tensor
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


_ORT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
              "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(bool)": np.bool_}


def _cast(sess, feeds: dict) -> dict:
    """The feeds in the graph's own input types (a converted graph may take fp16)."""
    types = {i.name: _ORT_TYPES.get(i.type) for i in sess.get_inputs()}
    return {k: v.astype(types[k], copy=False) if types.get(k) else v for k, v in feeds.items() if k in types}

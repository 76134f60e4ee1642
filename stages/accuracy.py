"""One accuracy path for every backend: a candidate and a reference runner fed the same batches, every output
compared, the rows of the `accuracy` table out.

A runner is anything with `infer(feeds) -> outputs` (dicts of numpy arrays by name) and `close()`, as Polygraphy's
runners are; it casts the feeds to its own input types, so a converted model that takes fp16 sees the same numbers,
rounded. A runner with `on_gpu = True` runs inside the GPU session (stages/gpu/session.py), so validation never
disturbs another job's measurement; a CPU reference runs outside it. The metrics accumulate batch by batch, so a
large validation set is never held in memory (beyond a few bytes a sample for the `predictions` table, and the
outputs a user's `validate.metric` is handed).

Which output is judged: class scores are a float (batch, classes) output, or a float (batch, tokens, vocabulary)
output whose name says logits; an integer output (a `label` an ONNX classifier returns beside its probabilities)
never is. With labels, the task output is the first output they fit: class scores for integer class indices, a
float output with one value per label for float (regression) labels. Without labels, it is the first class-score
output, else the first output. That output's rows come first and its per-sample record is the `predictions` table.
"""
from __future__ import annotations

import contextlib
from typing import Iterable, Protocol

import numpy as np


class Runner(Protocol):
    on_gpu: bool

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def close(self) -> None: ...


class Agreement:
    """max_abs_err, rel_l2_err (||c - r|| / ||r||), cosine and, for class scores, top1_agreement (per row; per token
    for per-token logits), over every element seen so far: the same numbers as computed on the whole concatenation."""

    def __init__(self, scores: bool):
        self.max_abs = 0.0
        self.diff2 = self.ref2 = self.out2 = self.dot = 0.0
        self.top1 = self.rows = 0
        self.scores = scores

    def add(self, reference: np.ndarray, candidate: np.ndarray) -> np.ndarray | None:
        """Accumulate one batch; for class scores, per sample whether every top-1 decision agreed."""
        ref = np.asarray(reference, dtype=np.float64)
        out = np.asarray(candidate, dtype=np.float64)
        if ref.shape != out.shape:
            raise ValueError(f"output shapes differ: reference {ref.shape}, candidate {out.shape}")
        diff = out - ref
        if diff.size:
            self.max_abs = max(self.max_abs, float(np.max(np.abs(diff))))
        self.diff2 += float(np.sum(diff * diff))
        self.ref2 += float(np.sum(ref * ref))
        self.out2 += float(np.sum(out * out))
        self.dot += float(np.sum(ref * out))
        if not self.scores:
            return None
        same = ref.argmax(axis=-1) == out.argmax(axis=-1)
        self.top1 += int(np.sum(same))
        self.rows += same.size
        return same.reshape(len(same), -1).all(axis=1)

    def metrics(self) -> dict[str, float]:
        ref_norm, out_norm = np.sqrt(self.ref2), np.sqrt(self.out2)
        cosine = self.dot / (ref_norm * out_norm) if ref_norm and out_norm else float(ref_norm == out_norm)
        out = {"max_abs_err": self.max_abs,
               "rel_l2_err": float(np.sqrt(self.diff2) / ref_norm) if ref_norm else float(np.sqrt(self.diff2)),
               "cosine": float(cosine)}
        if self.scores and self.rows:
            out["top1_agreement"] = self.top1 / self.rows
        return out


def compare(reference: np.ndarray, candidate: np.ndarray, name: str = "") -> dict[str, float]:
    """The agreement metrics of one pair of arrays."""
    agreement = Agreement(is_scores(name, np.asarray(reference)))
    agreement.add(reference, candidate)
    return agreement.metrics()


def is_scores(name: str, output: np.ndarray) -> bool:
    """Class scores: a float (batch, classes) output, or per-token logits (batch, tokens, vocabulary) by name."""
    if output.dtype.kind not in "fV" or output.ndim < 2 or output.shape[-1] < 2:
        return False
    return output.ndim == 2 or (output.ndim == 3 and "logit" in name.lower())


class TaskAccuracy:
    """Top-1 (and top-5, beyond 5 classes) accuracy against labels, for the run and for its fp32 reference, of one
    (batch, classes) output; and the paired counts selection judges the drop by (pipeline/analysis/paired.py):
    `top1_run_only` (samples only the run got right) and `top1_reference_only`."""

    def __init__(self):
        self.samples = 0
        self.correct = {"run": {1: 0, 5: 0}, "reference": {1: 0, 5: 0}}
        self.run_only = self.reference_only = 0
        self.classes = 0

    def add(self, reference: np.ndarray, candidate: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
        """Accumulate one batch; per sample whether each side got it right."""
        self.classes = reference.shape[1]
        right = {}
        for side, scores in (("run", candidate), ("reference", reference)):
            scores = np.asarray(scores, dtype=np.float64)
            right[side] = scores.argmax(axis=1) == labels
            self.correct[side][1] += int(np.sum(right[side]))
            if self.classes > 5:
                top5 = np.argpartition(-scores, 5, axis=1)[:, :5]
                self.correct[side][5] += int(np.sum(np.any(top5 == labels[:, None], axis=1)))
        self.run_only += int(np.sum(right["run"] & ~right["reference"]))
        self.reference_only += int(np.sum(right["reference"] & ~right["run"]))
        self.samples += len(labels)
        return {"run_correct": right["run"], "reference_correct": right["reference"]}

    def metrics(self) -> dict[str, float]:
        out = {}
        for k in (1, 5) if self.classes > 5 else (1,):
            run, ref = (self.correct[side][k] / self.samples for side in ("run", "reference"))
            out.update({f"top{k}_accuracy": run, f"top{k}_accuracy_reference": ref, f"top{k}_accuracy_drop": ref - run})
        out.update(top1_run_only=float(self.run_only), top1_reference_only=float(self.reference_only))
        return out


class TaskRegression:
    """MAE, RMSE and R^2 against float labels, for the run and for its fp32 reference, each with its `_drop` (how
    much worse the run is: positive is worse, whichever way the metric points)."""

    def __init__(self):
        self.samples = 0
        self.abs = {"run": 0.0, "reference": 0.0}
        self.sq = {"run": 0.0, "reference": 0.0}
        self.values = self.label_sum = self.label_sq = 0.0

    def add(self, reference: np.ndarray, candidate: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
        """Accumulate one batch; per sample each side's absolute error (the mean over its values)."""
        y = np.asarray(labels, dtype=np.float64).reshape(len(labels), -1)
        errors = {}
        for side, predicted in (("run", candidate), ("reference", reference)):
            diff = np.asarray(predicted, dtype=np.float64).reshape(y.shape) - y
            self.abs[side] += float(np.sum(np.abs(diff)))
            self.sq[side] += float(np.sum(diff * diff))
            errors[f"{side}_error"] = np.abs(diff).mean(axis=1).astype(np.float32)
        self.values += y.size
        self.label_sum += float(np.sum(y))
        self.label_sq += float(np.sum(y * y))
        self.samples += len(y)
        return errors

    def metrics(self) -> dict[str, float]:
        spread = self.label_sq - self.label_sum ** 2 / self.values  # total sum of squares about the labels' mean
        out = {}
        for side, suffix in (("run", ""), ("reference", "_reference")):
            out[f"mae{suffix}"] = self.abs[side] / self.values
            out[f"rmse{suffix}"] = float(np.sqrt(self.sq[side] / self.values))
            out[f"r2{suffix}"] = 1 - self.sq[side] / spread if spread > 0 else float("nan")
        out.update(mae_drop=out["mae"] - out["mae_reference"], rmse_drop=out["rmse"] - out["rmse_reference"],
                   r2_drop=out["r2_reference"] - out["r2"])
        return out


def task_for(name: str, output: np.ndarray, labels: np.ndarray | None) -> type | None:
    """Which task metrics `labels` give this output: TaskAccuracy, TaskRegression or None (they do not fit it)."""
    if labels is None or not len(labels):
        return None
    if np.issubdtype(labels.dtype, np.integer):
        fits = (is_scores(name, output) and output.ndim == 2
                and 0 <= int(labels.min()) and int(labels.max()) < output.shape[1])
        return TaskAccuracy if fits else None
    per_sample = int(np.prod(labels.shape[1:], dtype=np.int64))
    fits = (output.dtype.kind in "fV" and output.ndim >= 1 and output.shape[0] == len(labels)
            and int(np.prod(output.shape[1:], dtype=np.int64)) == per_sample)
    return TaskRegression if fits else None


def evaluate(candidate: Runner, reference: Runner, batches: Iterable[tuple[dict, np.ndarray | None, int]],
             reference_name: str, metric: dict | None = None) -> tuple[list[dict], dict, dict]:
    """Both runners on every batch (feeds, labels or None, how many rows are real: a padded last batch has fewer);
    `accuracy` rows (one set per output of the reference: agreement with it, and with labels, the task metrics of
    the run and of the reference on the task output), runs info (the headline metrics, and how many samples were
    compared) and the `predictions` table (columns, per sample of the task output, or of the first class-score
    output without labels). `metric` ({_target_, higher_is_better, tensors, kwargs...}) adds the user's task metric
    on the task output; it fails, naming validate.metric, where it cannot be computed."""
    agreement: dict[str, Agreement] = {}
    task: tuple[str, TaskAccuracy | TaskRegression] | None = None
    headline: str | None = None
    kept: dict[str, list] = {"run": [], "reference": [], "labels": []}
    per_sample: list[dict[str, np.ndarray]] = []  # per batch, the predictions columns
    samples = labelled = 0
    for feeds, labels, rows in batches:
        got = _infer(candidate, feeds)
        want = _infer(reference, feeds)
        missing = sorted(set(want) - set(got))
        if missing:
            raise RuntimeError(f"the model under test has no output {missing} (it has {sorted(got)})")
        labels = labels[:rows] if labels is not None else None
        labelled += 0 if labels is None else len(labels)
        if headline is None:
            headline, task = _headline({k: _real(v, rows) for k, v in want.items()}, labels)
        for name, value in want.items():
            ref, out = _real(value, rows), _real(got[name], rows)
            agree = agreement.setdefault(name, Agreement(is_scores(name, ref))).add(ref, out)
            if name != headline:
                continue
            record = {} if agree is None else {"agree": agree}
            # a batch whose labels this output cannot take (a -100 'ignore' class) is left out of the task metrics
            fits = task_for(name, ref, labels) if task is not None else None
            if fits is not None and isinstance(task[1], fits):
                record.update(task[1].add(ref, out, labels))
                if metric:
                    kept["run"].append(out), kept["reference"].append(ref), kept["labels"].append(labels)
            if record:
                per_sample.append({"sample": np.arange(samples, samples + rows, dtype=np.int32), **record})
        samples += rows
    if metric and not kept["labels"]:
        raise _no_metric(metric, "it needs labelled data (validate.data with labels) that fit an output"
                         if not labelled else "the labels fit no output of the model (class indices need a "
                         "(batch, classes) float output; float labels an output with one value per label)")
    rows_out, info = [], {"samples": samples}
    for name in sorted(agreement, key=lambda n: n != headline):  # the headline output first: "the first output"
        metrics = agreement[name].metrics()
        rows_out += [{"output": name, "metric": k, "value": v, "reference": reference_name, "samples": samples}
                     for k, v in metrics.items()]
        if task is not None and name == task[0]:  # over the labelled samples: their own count
            scored = task[1].metrics()
            if metric:
                scored.update(user_metric(metric, kept))
            rows_out += [{"output": name, "metric": k, "value": v, "reference": reference_name,
                          "samples": task[1].samples} for k, v in scored.items()]
            metrics.update(scored)
            info.update({k: metrics[k] for k in ("top1_accuracy", "top1_accuracy_drop", "r2", "r2_drop")
                         if k in metrics})
        if name == headline:
            info.update({k: metrics[k] for k in ("rel_l2_err", "top1_agreement") if k in metrics})
            info["output"] = name
    return rows_out, info, _predictions(headline, per_sample)


def _predictions(output: str | None, batches: list[dict[str, np.ndarray]]) -> dict:
    """The `predictions` columns of the batches; null where a batch lacks a column (its labels did not fit)."""
    if not batches:
        return {}
    columns = dict.fromkeys(k for batch in batches for k in batch)
    out = {"output": [output] * sum(len(batch["sample"]) for batch in batches)}
    for column in columns:
        parts = [b[column] if column in b else np.full(len(b["sample"]), None, dtype=object) for b in batches]
        out[column] = np.concatenate(parts)
    return out


def _headline(outputs: dict[str, np.ndarray], labels: np.ndarray | None):
    """(the output judged, (its name, its task metrics) or None), from the first batch."""
    for name, value in outputs.items():
        kind = task_for(name, value, labels)
        if kind is not None:
            return name, (name, kind())
    scores = [name for name, value in outputs.items() if is_scores(name, value)]
    return (scores or list(outputs))[0], None


def user_metric(metric: dict, kept: dict) -> dict[str, float]:
    """`metric._target_`(predictions, labels, **kwargs) for the run and for the reference, over every sample, and
    its `_drop` (reference minus run where `higher_is_better` (the default), else run minus reference);
    `tensors: true` hands it torch tensors (torchmetrics' functions take those)."""
    from stages import targets

    target = metric.get("_target_")
    _, function = targets.resolve(target, key="validate.metric._target_")
    kwargs = {k: v for k, v in metric.items() if k not in ("_target_", "tensors", "higher_is_better")}
    labels = np.concatenate(kept["labels"])
    name = str(target).replace(":", ".").rsplit(".", 1)[-1]
    out = {}
    for side, suffix in (("run", ""), ("reference", "_reference")):
        predictions = np.concatenate(kept[side])
        args = (predictions, labels)
        if metric.get("tensors"):
            import torch

            args = tuple(torch.from_numpy(a) for a in args)
        try:
            value = float(function(*args, **kwargs))
        except Exception as err:  # noqa: BLE001 - the user's function: one line naming it, never a dropped metric
            raise _no_metric(metric, f"it raised {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
                             ) from err
        out[f"{name}{suffix}"] = value
    sign = 1.0 if metric.get("higher_is_better", True) else -1.0
    out[f"{name}_drop"] = sign * (out[f"{name}_reference"] - out[name]) + 0.0  # + 0.0: no "-0" for no change
    return out


def _no_metric(metric: dict, why: str) -> Exception:
    from stages.api import StageInputError

    return StageInputError(f"validate.metric = {{_target_: {metric.get('_target_')}}} cannot be computed: {why}")


def _real(output: np.ndarray, rows: int) -> np.ndarray:
    """The rows of a padded batch that are real (outputs that have a batch axis)."""
    return output[:rows] if output.ndim and output.shape[0] >= rows else output


def _infer(runner: Runner, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    from stages.gpu import session

    with session.exclusive() if runner.on_gpu else contextlib.nullcontext():
        return runner.infer(feeds)

"""One accuracy path for every backend: a candidate and a reference runner fed the same batches, every output
compared, the rows of the `accuracy` table out.

A runner is anything with `infer(feeds) -> outputs` (dicts of numpy arrays by name) and `close()`, as Polygraphy's
runners are; it casts the feeds to its own input types, so a converted model that takes fp16 sees the same numbers,
rounded. A runner with `on_gpu = True` runs inside the GPU session (stages/gpu/session.py), so validation never
disturbs another job's measurement; a CPU reference runs outside it. The metrics accumulate batch by batch, so a
large validation set is never held in memory.
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
    """max_abs_err, rel_l2_err (||c - r|| / ||r||), cosine and, for (batch, classes) outputs, top1_agreement, over
    every element seen so far: the same numbers as computed on the whole concatenation."""

    def __init__(self):
        self.max_abs = 0.0
        self.diff2 = self.ref2 = self.out2 = self.dot = 0.0
        self.top1 = self.rows = 0
        self.classes = True

    def add(self, reference: np.ndarray, candidate: np.ndarray) -> None:
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
        self.classes = self.classes and ref.ndim == 2 and ref.shape[1] > 1
        if self.classes:
            self.top1 += int(np.sum(ref.argmax(axis=1) == out.argmax(axis=1)))
            self.rows += ref.shape[0]

    def metrics(self) -> dict[str, float]:
        ref_norm, out_norm = np.sqrt(self.ref2), np.sqrt(self.out2)
        cosine = self.dot / (ref_norm * out_norm) if ref_norm and out_norm else float(ref_norm == out_norm)
        out = {"max_abs_err": self.max_abs,
               "rel_l2_err": float(np.sqrt(self.diff2) / ref_norm) if ref_norm else float(np.sqrt(self.diff2)),
               "cosine": float(cosine)}
        if self.classes and self.rows:
            out["top1_agreement"] = self.top1 / self.rows
        return out


def compare(reference: np.ndarray, candidate: np.ndarray) -> dict[str, float]:
    """The agreement metrics of one pair of arrays."""
    agreement = Agreement()
    agreement.add(reference, candidate)
    return agreement.metrics()


class TaskAccuracy:
    """Top-1 (and top-5, beyond 5 classes) accuracy against labels, for the run and for its fp32 reference, of one
    (batch, classes) output."""

    def __init__(self):
        self.samples = 0
        self.correct = {"run": {1: 0, 5: 0}, "reference": {1: 0, 5: 0}}
        self.classes = 0

    def add(self, reference: np.ndarray, candidate: np.ndarray, labels: np.ndarray) -> None:
        self.classes = reference.shape[1]
        for side, scores in (("run", candidate), ("reference", reference)):
            scores = np.asarray(scores, dtype=np.float64)
            self.correct[side][1] += int(np.sum(scores.argmax(axis=1) == labels))
            if self.classes > 5:
                top5 = np.argpartition(-scores, 5, axis=1)[:, :5]
                self.correct[side][5] += int(np.sum(np.any(top5 == labels[:, None], axis=1)))
        self.samples += len(labels)

    def metrics(self) -> dict[str, float]:
        out = {}
        for k in (1, 5) if self.classes > 5 else (1,):
            run, ref = (self.correct[side][k] / self.samples for side in ("run", "reference"))
            out.update({f"top{k}_accuracy": run, f"top{k}_accuracy_reference": ref, f"top{k}_accuracy_drop": ref - run})
        return out


def classifies(output: np.ndarray, labels: np.ndarray | None) -> bool:
    """A (batch, classes) output that labels can index: the one task metrics are computed on."""
    return (labels is not None and output.ndim == 2 and output.shape[1] > 1
            and 0 <= int(labels.min()) and int(labels.max()) < output.shape[1])


def evaluate(candidate: Runner, reference: Runner, batches: Iterable[tuple[dict, np.ndarray | None, int]],
             reference_name: str, metric: dict | None = None) -> tuple[list[dict], dict]:
    """Both runners on every batch (feeds, labels or None, how many rows are real: a padded last batch has fewer);
    `accuracy` rows (one set per output of the reference: agreement with it, and with labels, task accuracy of
    the run and of the reference) and runs info (the headline metrics, and how many samples were compared).
    `metric` ({_target_, kwargs...}) adds the user's task metric, on the first classifier output."""
    agreement: dict[str, Agreement] = {}
    task: dict[str, TaskAccuracy] = {}
    kept: dict[str, list] = {"run": [], "reference": [], "labels": []}
    samples = 0
    for feeds, labels, rows in batches:
        got = _infer(candidate, feeds)
        want = _infer(reference, feeds)
        missing = sorted(set(want) - set(got))
        if missing:
            raise RuntimeError(f"the model under test has no output {missing} (it has {sorted(got)})")
        labels = labels[:rows] if labels is not None else None
        for name, value in want.items():
            ref, out = _real(value, rows), _real(got[name], rows)
            agreement.setdefault(name, Agreement()).add(ref, out)
            if classifies(ref, labels):
                task.setdefault(name, TaskAccuracy()).add(ref, out, labels)
                if metric and name == next(iter(task)):
                    kept["run"].append(out), kept["reference"].append(ref), kept["labels"].append(labels)
        samples += rows
    rows_out, info = [], {"samples": samples}
    for i, (name, agreement_of) in enumerate(agreement.items()):
        metrics = agreement_of.metrics()
        rows_out += [{"output": name, "metric": k, "value": v, "reference": reference_name, "samples": samples}
                     for k, v in metrics.items()]
        if name in task:  # over the batches whose labels this output can index: their own count
            scored = task[name].metrics()
            if metric and kept["labels"] and name == next(iter(task)):
                scored.update(user_metric(metric, kept))
            rows_out += [{"output": name, "metric": k, "value": v, "reference": reference_name,
                          "samples": task[name].samples} for k, v in scored.items()]
            metrics.update(scored)
        if i == 0:
            info.update({k: metrics[k] for k in ("rel_l2_err", "top1_agreement") if k in metrics})
        if name == next(iter(task), None):
            info.update({k: metrics[k] for k in ("top1_accuracy", "top1_accuracy_drop")})
    return rows_out, info


def user_metric(metric: dict, kept: dict) -> dict[str, float]:
    """`metric._target_`(predictions, labels, **kwargs) for the run and for the reference, over every sample;
    `tensors: true` hands it torch tensors (torchmetrics' functions take those)."""
    from stages import targets

    target = metric.get("_target_")
    _, function = targets.resolve(target, key="validate.metric._target_")
    kwargs = {k: v for k, v in metric.items() if k not in ("_target_", "tensors")}
    labels = np.concatenate(kept["labels"])
    name = str(target).replace(":", ".").rsplit(".", 1)[-1]
    out = {}
    for side, suffix in (("run", ""), ("reference", "_reference")):
        predictions = np.concatenate(kept[side])
        args = (predictions, labels)
        if metric.get("tensors"):
            import torch

            args = tuple(torch.from_numpy(a) for a in args)
        out[f"{name}{suffix}"] = float(function(*args, **kwargs))
    return out


def _real(output: np.ndarray, rows: int) -> np.ndarray:
    """The rows of a padded batch that are real (outputs that have a batch axis)."""
    return output[:rows] if output.ndim and output.shape[0] >= rows else output


def _infer(runner: Runner, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    from stages.gpu import session

    with session.exclusive() if runner.on_gpu else contextlib.nullcontext():
        return runner.infer(feeds)

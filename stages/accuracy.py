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


def evaluate(candidate: Runner, reference: Runner, batches: Iterable[dict[str, np.ndarray]], reference_name: str
             ) -> tuple[list[dict], dict]:
    """Both runners on every batch; `accuracy` rows (one set per output of the reference) and runs info (the first
    output's headline metrics, and how many samples were compared)."""
    per_output: dict[str, Agreement] = {}
    samples = 0
    for feeds in batches:
        got = _infer(candidate, feeds)
        want = _infer(reference, feeds)
        missing = sorted(set(want) - set(got))
        if missing:
            raise RuntimeError(f"the model under test has no output {missing} (it has {sorted(got)})")
        for name, value in want.items():
            per_output.setdefault(name, Agreement()).add(value, got[name])
        samples += len(next(iter(feeds.values()))) if feeds else 0
    rows, info = [], {"samples": samples}
    for i, (name, agreement) in enumerate(per_output.items()):
        metrics = agreement.metrics()
        rows += [{"output": name, "metric": k, "value": v, "reference": reference_name, "samples": samples}
                 for k, v in metrics.items()]
        if i == 0:
            info.update({k: metrics[k] for k in ("rel_l2_err", "top1_agreement") if k in metrics})
    return rows, info


def _infer(runner: Runner, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    from stages.gpu import session

    with session.exclusive() if runner.on_gpu else contextlib.nullcontext():
        return runner.infer(feeds)

"""Real data for validation and calibration: where it comes from, that it fits the model, and its batches.

A data set is either
- a `.npz` file: one array per model input, batch (sample) axis first, and optionally `labels` (one integer class
  index per sample, or float regression targets, samples first), or
- `{_target_: pkg.module.function, <kwargs>...}`: a callable that returns an iterable of batches, each a dict of
  arrays by input name, optionally with `labels`. The built-in `stages.hf_datasets.load` (HF_LOADER) reads Hugging
  Face data sets this way.
It is checked against the model's inputs before any work is done (`check`): a missing array, a shape or a dtype the
input does not take fails naming the key, the file, the array and what the model needs. `batches` cuts it into the
run's batch size, up to `max_samples`; the last batch is padded with copies of its last sample, so a fixed-shape
engine can run it, and says how many of its rows are real.

`digits` is the data set the built-in `digits` model is trained and validated on: scikit-learn's 1,797 labelled 8x8
handwritten digits (they ship inside scikit-learn), split once by a fixed permutation.
"""
from __future__ import annotations

import functools
import hashlib
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from stages import inputs as model_inputs
from stages.api import StageInputError

LABELS = "labels"
DIGITS_TEST_SHARE = 0.2


KEYS = {"validate": "validate.data", "calibration": "convert.calibration.data"}
HF_LOADER = "stages.hf_datasets.load"  # its data set is keyed by content (digest)


def check_all(feeds: dict, specs: list[model_inputs.InputSpec]) -> None:
    """Refuse, before any work, a validation or calibration data set (feeds["data"]) that does not fit the model."""
    axis_sizes = model_inputs.sizes(feeds)
    for use, source in (feeds.get("data") or {}).items():
        if source:
            check(source, specs, KEYS.get(use, use), axis_sizes)


def check(source, specs: list[model_inputs.InputSpec], key: str, axis_sizes: dict | None = None) -> None:
    """Refuse, naming `key`, a data set that does not fit the model; reads the first batch only."""
    first = next(iter(_raw(source, key)), None)
    if first is None:
        raise StageInputError(f"{key} = {_show(source)}: the data set is empty")
    _fit(first, specs, key, source, axis_sizes)


def validation(specs: list[model_inputs.InputSpec], feeds: dict, settings: dict, seed: int):
    """The batches a validation compares on: `validate.data` (up to validate.max_samples), else
    `validate.batches` seeded random ones; each (feeds, labels or None, real rows)."""
    axis_sizes = model_inputs.sizes(feeds)
    if settings.get("data"):
        return batches(settings["data"], specs, "validate.data", axis_sizes, settings["max_samples"])
    batch = axis_sizes[model_inputs.BATCH]
    return ((f, None, batch) for f in model_inputs.validation_batches(specs, axis_sizes, seed, settings["batches"]))


def calibration(specs: list[model_inputs.InputSpec], feeds: dict, settings: dict, seed: int,
                batch: int | None = None) -> Iterator[dict[str, np.ndarray]]:
    """The calibration samples of `convert.calibration` (settings): at most `samples` of its data, else that many
    seeded random ones (the same values for every backend), in batches of `batch` (default: one batch)."""
    sizes, samples = model_inputs.sizes(feeds), settings["samples"]
    batch = batch or samples
    if settings.get("data"):
        for data, _, rows in batches(settings["data"], specs, KEYS["calibration"],
                                     {**sizes, model_inputs.BATCH: batch}, samples):
            yield {k: v[:rows] for k, v in data.items()}
        return
    data = model_inputs.random_inputs(specs, {**sizes, model_inputs.BATCH: samples},
                                      seed + model_inputs.SEED_CALIBRATION)
    for start in range(0, samples, batch):
        yield {k: v[start:start + batch] for k, v in data.items()}


def batches(source, specs: list[model_inputs.InputSpec], key: str, axis_sizes: dict, max_samples: int
            ) -> Iterator[tuple[dict[str, np.ndarray], np.ndarray | None, int]]:
    """(feeds, labels or None, real rows) per batch of the run's batch size, up to `max_samples` samples in all."""
    batch_size = axis_sizes[model_inputs.BATCH]
    pending: list[dict[str, np.ndarray]] = []
    have = seen = 0
    for raw in _raw(source, key):
        batch = _fit(raw, specs, key, source, axis_sizes, offset=seen)
        take = min(len(next(iter(batch.values()))), max_samples - seen)
        if take <= 0:
            break
        pending.append({k: v[:take] for k, v in batch.items()})
        have, seen = have + take, seen + take
        while have >= batch_size:
            joined = {k: np.concatenate([p[k] for p in pending]) for k in pending[0]}
            yield _split(joined, 0, batch_size, batch_size)
            rest = {k: v[batch_size:] for k, v in joined.items()}
            pending, have = ([rest] if len(next(iter(rest.values()))) else []), have - batch_size
    if have:
        joined = {k: np.concatenate([p[k] for p in pending]) for k in pending[0]}
        yield _split(joined, 0, have, batch_size)


def digest(source) -> str:
    """What a cache key holds of a data set: a file's bytes, or the callable's name and arguments (its code is
    keyed by the caller, as a factory's is), and for the Hugging Face loader its data set's files."""
    if isinstance(source, str):
        path = Path(source)
        if not path.is_file():
            raise StageInputError(f"data = '{source}': file not found")
        return hashlib.sha256(path.read_bytes()).hexdigest()
    named = repr(sorted(dict(source).items()))
    if dict(source).get("_target_") == HF_LOADER and isinstance(dict(source).get("dataset"), str):
        from stages import hf_datasets

        named += hf_datasets.content_digest(dict(source)["dataset"])
    return hashlib.sha256(named.encode()).hexdigest()


def digits(split: str = "test", seed: int = 0) -> list[dict[str, np.ndarray]]:
    """scikit-learn's 8x8 digits as one batch: `input` (N, 1, 8, 8) float32 in [0, 1], `labels` (N,) int64."""
    if split not in ("train", "test"):
        raise StageInputError(f"digits: split = '{split}': valid: train, test")
    data = _load_digits()
    order = np.random.default_rng(seed).permutation(len(data.target))
    cut = int(round(len(order) * (1 - DIGITS_TEST_SHARE)))
    rows = order[:cut] if split == "train" else order[cut:]
    images = (data.images[rows] / 16.0).astype(np.float32)[:, None]
    return [{"input": images, LABELS: data.target[rows].astype(np.int64)}]


@functools.lru_cache(maxsize=1)
def _load_digits():
    """scikit-learn's digits, read once a process: each job of a sweep checks its data (export) and reads it again
    (calibration, validation); the arrays are only read (digits() makes new ones from them)."""
    from sklearn.datasets import load_digits

    return load_digits()


# --------------------------------------------------------------------------- reading


def _raw(source, key: str) -> Iterable[dict[str, np.ndarray]]:
    if isinstance(source, str):
        return [_load_npz(source, key)]
    if isinstance(source, dict) and source.get("_target_"):
        from stages import targets

        kwargs = {k: v for k, v in source.items() if k != "_target_"}
        try:
            _, function = targets.resolve(source["_target_"], key=f"{key}._target_")
            return function(**kwargs)
        except StageInputError:
            raise
        except Exception as err:  # noqa: BLE001 - the user's loader: one line naming it
            raise StageInputError(f"{key}._target_ = '{source['_target_']}' failed: {type(err).__name__}: "
                                  f"{str(err).splitlines()[0] if str(err) else ''}") from err
    raise StageInputError(f"{key} = {source!r}: expected a .npz path or {{_target_: package.module.function}}")


def _load_npz(path: str, key: str) -> dict[str, np.ndarray]:
    file = Path(path)
    if not file.is_file():
        raise StageInputError(f"{key} = '{path}': file not found")
    try:
        with np.load(file) as data:
            return {name: data[name] for name in data.files}
    except Exception as err:
        raise StageInputError(f"{key} = '{path}': not a readable .npz file ({err})") from err


def _fit(raw: dict, specs: list[model_inputs.InputSpec], key: str, source, axis_sizes: dict | None = None,
         offset: int = 0) -> dict[str, np.ndarray]:
    """The batch's arrays for the model's inputs (in spec order, in their dtypes) and its labels, checked: a named
    axis besides the batch must have the run's size (the engine is built for it), and every value is finite (a NaN
    would make every accuracy metric NaN, which no bound can judge). `offset`: the data set's sample index of the
    batch's first row, for the message."""
    if not isinstance(raw, dict):
        raise StageInputError(f"{key} = {_show(source)}: a batch must be a dict of arrays by input name, "
                              f"got {type(raw).__name__}")
    missing = [s.name for s in specs if s.name not in raw]
    if missing:
        raise StageInputError(f"{key} = {_show(source)} has arrays {sorted(raw)}; the model needs {missing}")
    out = {}
    for spec in specs:
        array = np.asarray(raw[spec.name])
        where = f"{key} = {_show(source)}: array '{spec.name}'"
        model_inputs.check_array(array, spec, where)
        for axis, size in zip(spec.dims[1:], array.shape[1:]):
            if isinstance(axis, str) and axis_sizes and axis in axis_sizes and size != axis_sizes[axis]:
                raise StageInputError(f"{where} has {axis} {size}; the run is sized axes.{axis}={axis_sizes[axis]} "
                                      f"(set it to the data's, or give data of that size)")
        out[spec.name] = array.astype(spec.dtype, copy=False)
        _require_finite(out[spec.name], where, offset)
    n = len(next(iter(out.values())))
    if any(len(a) != n for a in out.values()):
        raise StageInputError(f"{key} = {_show(source)}: its arrays hold different numbers of samples "
                              f"{ {k: len(v) for k, v in out.items()} }")
    if LABELS in raw:
        labels = np.asarray(raw[LABELS])
        if np.issubdtype(labels.dtype, np.floating) and labels.ndim >= 1 and len(labels) == n:
            out[LABELS] = labels.astype(np.float32)  # regression targets: one value (or array) per sample
            _require_finite(out[LABELS], f"{key} = {_show(source)}: array 'labels'", offset)
        elif labels.shape == (n,) and np.issubdtype(labels.dtype, np.integer):
            out[LABELS] = labels.astype(np.int64)
        else:
            raise StageInputError(f"{key} = {_show(source)}: array 'labels' has shape {labels.shape} and dtype "
                                  f"{labels.dtype}; it needs one integer class index per sample, shape ({n},), or "
                                  f"float regression targets with {n} samples first")
    return out


def _require_finite(array: np.ndarray, where: str, offset: int) -> None:
    if not np.issubdtype(array.dtype, np.floating) and array.dtype.kind != "V":  # ints cannot hold a NaN
        return
    finite = np.isfinite(array.astype(np.float32, copy=False)) if array.dtype.kind == "V" else np.isfinite(array)
    if finite.all():
        return
    bad = np.argwhere(~finite)
    first = tuple(int(i) for i in bad[0])
    value = array[first]
    raise StageInputError(f"{where} holds {len(bad)} non-finite value(s) ({value}); the first at sample "
                          f"{offset + first[0]} (index {first}); validation and calibration data must be finite")


def _split(batch: dict, start: int, rows: int, size: int) -> tuple[dict, np.ndarray | None, int]:
    """`rows` real samples from `start`, padded to `size` with copies of the last one."""
    take = {k: v[start:start + rows] for k, v in batch.items()}
    if rows < size:
        take = {k: np.concatenate([v, np.repeat(v[-1:], size - rows, axis=0)]) for k, v in take.items()}
    labels = take.pop(LABELS, None)
    return take, labels, rows


def _show(source) -> str:
    return f"'{source}'" if isinstance(source, str) else f"{{_target_: {dict(source).get('_target_')}}}"

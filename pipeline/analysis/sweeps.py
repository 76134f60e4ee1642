"""What a sweep swept: the keys whose values differ between its runs, read from each run's recorded overrides
(the values the user typed), and the short names to show them by. The end-of-sweep table, the report, select and
compare all name points this way."""
from __future__ import annotations

import pandas as pd

from pipeline import results

# runs columns that are sweep axes even when no override names them (e.g. several sweeps loaded together)
AXES = ("model", "backend", "precision", "batch_size", "optimization_level", "max_aux_streams")
# swept keys that decide an axis column (a point of +sweep=gpu_precision names its precision): not shown twice
COVERS = {"backend.point": ("precision",)}


def swept_values(runs: pd.DataFrame) -> pd.DataFrame:
    """The values that differ between runs, one column per swept key, as strings.

    Taken from each run's recorded overrides (the value the user typed) where they differ, then from the
    fixed axis columns that differ without an override saying so.
    """
    parsed = [_overrides(text) for text in runs["overrides"]]
    keys = dict.fromkeys(k for p in parsed for k in p)
    swept = {k: [p.get(k, "") for p in parsed] for k in keys if len({p.get(k) for p in parsed}) > 1}
    covered = {k if k in AXES else results.column_of(k) for k in swept}  # backend.optimization_level -> its column
    covered.update(c for k in swept for c in COVERS.get(k, ()))
    for column in AXES:
        if column not in covered and runs[column].nunique() > 1:
            swept[column] = ["" if pd.isna(v) else str(v) for v in runs[column]]
    return pd.DataFrame(swept, index=runs.index, dtype=object)


def short_keys(keys) -> dict[str, str]:
    """Swept key -> the name to show: its last part ('backend.optimization_level' -> 'optimization_level'),
    unless two keys end alike."""
    short = {k: k.rsplit(".", 1)[-1] for k in keys}
    return short if len(set(short.values())) == len(short) else {k: k for k in keys}


def _overrides(text) -> dict[str, str]:
    if text is None or pd.isna(text):
        return {}
    pairs = (item.lstrip("+~").partition("=") for item in str(text).split())
    # resume=true, cache.dir=...: never a swept axis, even where a rerun's overrides differ from its twin's
    return {k: v for k, _, v in pairs
            if not k.startswith("hydra.") and k != "sweep" and k.split(".")[0] not in results.NEVER_CHANGES_RESULT}

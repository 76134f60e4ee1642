"""Where a slower build spends its extra time: two runs' `layers` tables side by side, as TREx's engine comparison
does by hand.

Layers are joined on their name and type. Where names differ (a builder names fused layers after what it fused:
ONNX Runtime's fp32 `relu_2_nchwc` is `InsertedPrecisionFreeCast_getitem_6_nchwc` in its fp16 graph), the layers of
one type left unmatched on both sides are paired in the order they run, and shown as `A's name -> B's name`; a layer
whose type changed counts as removed and added. Per layer, the time per inference (`median_ms` where the profiler
gave one for every layer, else `time_ms`) on both sides and its change; the top contributors by the size of the
change; the layers only B has (a reformat or a cast the new precision brought in) and only A had; the layers whose
precision (`dtype`) changed.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

TOP = 5  # contributors shown


@dataclass
class Layer:
    layer: str
    layer_type: str
    a_ms: float | None      # None: the layer is not in A
    b_ms: float | None
    a_dtype: str = ""
    b_dtype: str = ""
    b_layer: str = ""       # B's name, where it differs from A's (paired by type and order)

    @property
    def delta_ms(self) -> float:
        return (self.b_ms or 0.0) - (self.a_ms or 0.0)

    @property
    def name(self) -> str:
        name = f"{self.layer} -> {self.b_layer}" if self.b_layer else self.layer
        return f"{name} ({self.layer_type})" if self.layer_type else name


@dataclass
class LayerDiff:
    total_a_ms: float
    total_b_ms: float
    layers: list[Layer] = field(default_factory=list)

    @property
    def added(self) -> list[Layer]:
        return sorted((x for x in self.layers if x.a_ms is None), key=lambda x: -x.delta_ms)

    @property
    def removed(self) -> list[Layer]:
        return sorted((x for x in self.layers if x.b_ms is None), key=lambda x: x.delta_ms)

    @property
    def precision_changed(self) -> list[Layer]:
        return [x for x in self.layers if x.a_ms is not None and x.b_ms is not None and x.a_dtype != x.b_dtype]

    def top(self, n: int = TOP) -> list[Layer]:
        """The layers whose time changed most, the slowdowns first among equals."""
        return sorted(self.layers, key=lambda x: (-abs(x.delta_ms), -x.delta_ms))[:n]


def _per_layer(table: pd.DataFrame) -> pd.DataFrame:
    column = "median_ms" if "median_ms" in table and table["median_ms"].notna().all() else "time_ms"
    t = table.assign(ms=table[column].astype(float), layer_type=table["layer_type"].fillna("").astype(str),
                     dtype=table["dtype"].fillna("").astype(str))
    # a layer on several streams (or listed twice) counts once, with its summed time
    return t.groupby(["layer", "layer_type"], sort=False).agg(
        ms=("ms", "sum"), dtype=("dtype", lambda d: ",".join(sorted(set(d) - {""})))).reset_index()


def diff(a: pd.DataFrame, b: pd.DataFrame) -> LayerDiff:
    """A's and B's `layers` rows (one run each) joined on layer name and type."""
    for side, table in (("A", a), ("B", b)):
        missing = {"layer", "layer_type", "dtype", "time_ms"} - set(table.columns)
        if missing:
            raise ValueError(f"{side}'s layers table lacks {', '.join(sorted(missing))}")
    pa, pb = _per_layer(a), _per_layer(b)
    ka, kb = (list(zip(t["layer"], t["layer_type"])) for t in (pa, pb))
    ia, ib = ({k: r for k, r in zip(keys, t.itertuples(index=False))} for keys, t in ((ka, pa), (kb, pb)))
    layers = [_layer(ia[k], ib[k]) for k in ka if k in ib]
    only_a, only_b = [k for k in ka if k not in ib], [k for k in kb if k not in ia]
    for kind in dict.fromkeys(t for _, t in only_a + only_b):  # renamed: paired by type, in the order they run
        left, right = [ia[k] for k in only_a if k[1] == kind], [ib[k] for k in only_b if k[1] == kind]
        layers += [_layer(x, y) for x, y in zip(left, right)]
        layers += [_layer(x, None) for x in left[len(right):]] + [_layer(None, y) for y in right[len(left):]]
    return LayerDiff(float(pa["ms"].sum()), float(pb["ms"].sum()), layers)


def _layer(a, b) -> Layer:
    """One layer from A's and B's aggregated rows (either may be None)."""
    first = a if a is not None else b
    renamed = str(b.layer) if a is not None and b is not None and b.layer != a.layer else ""
    return Layer(str(first.layer), str(first.layer_type), None if a is None else float(a.ms),
                 None if b is None else float(b.ms), "" if a is None else a.dtype, "" if b is None else b.dtype,
                 b_layer=renamed)


def render(d: LayerDiff, top: int = TOP) -> list[str]:
    """Lines that say where the time went, for compare's output."""
    change, changed = d.total_b_ms - d.total_a_ms, d.precision_changed
    lines = [f"layers: {d.total_a_ms:.4g} -> {d.total_b_ms:.4g} ms per inference ({change:+.3g} ms) over "
             f"{sum(x.a_ms is not None for x in d.layers)} / {sum(x.b_ms is not None for x in d.layers)} layers"]
    lines += [f"  {x.delta_ms:+.3g} ms  {x.name}: {_ms(x.a_ms)} -> {_ms(x.b_ms)}"
              + (f"  [{x.a_dtype} -> {x.b_dtype}]" if x in changed else "")
              for x in d.top(top) if x.delta_ms]
    for label, group in (("added in B", d.added), ("gone from A", d.removed)):
        if group:
            shown = ", ".join(f"{x.name} {_ms(x.b_ms if x.a_ms is None else x.a_ms)}" for x in group[:top])
            more = f" and {len(group) - top} more" if len(group) > top else ""
            lines.append(f"  {label} ({len(group)}, {sum(x.delta_ms for x in group):+.3g} ms): {shown}{more}")
    if changed:
        shown = ", ".join(f"{x.name} {x.a_dtype or '?'} -> {x.b_dtype or '?'}" for x in changed[:top])
        more = f" and {len(changed) - top} more" if len(changed) > top else ""
        lines.append(f"  precision changed ({len(changed)}): {shown}{more}")
    return lines


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g} ms"

"""Model inputs: a spec per input, the sizes of its named axes, and seeded data to feed it.

A spec says an input's name, dtype, dims (an int is a fixed size, a string a named axis: `batch`, `sequence`, or
an ONNX graph's own `dim_param`) and how its values are made:
- `normal`: seeded standard normals (floats);
- `integers`: seeded integers in [low, high): token ids below the row count of the embedding they index;
- `mask`: ones, with the last `padding` share of each row zero (attention masks).
Specs come from an ONNX graph (`specs_from_onnx`: names, element types, symbolic dims; the spec the export stage
recorded in the graph's metadata, or else what the graph shows: an integer input that a Gather indexes into a table
of N rows gets [0, N), one named like a mask gets ones) or from a model's source (stages/models.py), and the
config adjusts them (`resolve`: `model.input_shape`, `model.inputs.<name>.{shape,dtype,range,padding}`).

The config sizes the axes: `batch_size` the batch axis, `axes.<name>` any other (`sizes`). Stages receive those
keys together as their `feeds` parameter. Every stage that feeds a model (calibration, benchmark, validation)
draws its data here, so the same seed gives the same tensors whatever the precision or backend being compared.
"""
from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from stages.api import StageInputError

# Offsets keep the streams of different uses apart: calibration data never equals validation data.
SEED_CALIBRATION, SEED_BENCHMARK, SEED_VALIDATION = 1_000, 2_000, 3_000
BATCH = "batch"
METADATA_KEY = "pipeline.inputs"  # the export stage's specs, in the ONNX graph's metadata_props
KINDS = ("normal", "integers", "mask")
_MASK_WORDS = ("mask",)
_INTEGER_DEFAULT = (0, 100)  # an integer input nothing says more about


@dataclass(frozen=True)
class InputSpec:
    name: str
    dims: tuple                 # int: fixed size; str: a named axis
    dtype: np.dtype
    values: str = "normal"      # normal | integers | mask
    low: float | None = None    # integers: [low, high); normal with a range: uniform in [low, high)
    high: float | None = None
    padding: float = 0.0        # mask: share of zeros at the end of each row

    def axes(self) -> list[str]:
        return [d for d in self.dims if isinstance(d, str)]

    def to_json(self) -> dict:
        return {**asdict(self), "dims": list(self.dims), "dtype": self.dtype.name}

    @classmethod
    def from_json(cls, data: dict) -> InputSpec:
        return cls(**{**data, "dims": tuple(data["dims"]), "dtype": np.dtype(data["dtype"])})


def dumps(specs: list[InputSpec]) -> str:
    return json.dumps([s.to_json() for s in specs])


def loads(text: str) -> list[InputSpec]:
    return [InputSpec.from_json(d) for d in json.loads(text)]


# --------------------------------------------------------------------------- specs from an ONNX graph


def specs_from_onnx(path: Path) -> list[InputSpec]:
    """The graph's real inputs (initializers listed as inputs by old exporters are skipped), as the export stage
    recorded them when it made the graph, else as the graph shows them."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    initializers = {i.name for i in model.graph.initializer}
    graph_inputs = [v for v in model.graph.input if v.name not in initializers]
    recorded = next((p.value for p in model.metadata_props if p.key == METADATA_KEY), None)
    if recorded:
        specs = loads(recorded)
        if [s.name for s in specs] == [v.name for v in graph_inputs]:
            return [replace(s, dtype=_np_dtype(v)) for s, v in zip(specs, graph_inputs)]  # a convert may cast
    batch = _batch_name(graph_inputs)
    rows = _embedding_rows(model, initializers)
    specs = []
    for value in graph_inputs:
        dims = []
        for i, d in enumerate(value.type.tensor_type.shape.dim):
            if d.HasField("dim_value") and d.dim_value > 0:
                dims.append(d.dim_value)
            elif _named(d.dim_param) and d.dim_param != batch:
                dims.append(axis_name(d.dim_param))
            else:  # the batch axis, or a dynamic axis the graph gives no name
                first_unnamed = i == 0 and not _named(d.dim_param)
                dims.append(BATCH if d.dim_param == batch or first_unnamed else axis_name(f"{value.name}_{i}"))
        specs.append(_default_values(InputSpec(value.name, tuple(dims), _np_dtype(value)), rows.get(value.name)))
    return specs


def _named(dim_param: str) -> bool:
    """Whether a graph names a dynamic dim: exporters write '', '?' or '-1' for one they do not name."""
    return bool(dim_param) and dim_param != "?" and not re.fullmatch(r"-?\d+", dim_param)


def axis_name(name: str) -> str:
    """A graph's dim name as an axis name that `axes.<name>=N` can set on Hydra's command line: a plain identifier
    (`DynamicDimension.1` -> `DynamicDimension_1`, `x:0_1` -> `x_0_1`)."""
    plain = re.sub(r"\W+", "_", name).strip("_") or "axis"
    return plain if re.fullmatch(r"[A-Za-z_]\w*", plain) else f"axis_{plain}"


def _np_dtype(value) -> np.dtype:
    from onnx import helper

    return np.dtype(helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type))


def _batch_name(graph_inputs) -> str | None:
    """The batch axis's name: whatever the first input calls its first dim, when that dim is dynamic."""
    for value in graph_inputs[:1]:
        dims = value.type.tensor_type.shape.dim
        if dims and not (dims[0].HasField("dim_value") and dims[0].dim_value > 0):
            return dims[0].dim_param or None
    return None


def _embedding_rows(model, initializers: set[str]) -> dict[str, int]:
    """Graph input -> rows of the table a Gather indexes with it (directly, or through one Cast)."""
    tables = {i.name: i.dims[0] for i in model.graph.initializer if i.dims}
    cast_of = {n.output[0]: n.input[0] for n in model.graph.node if n.op_type == "Cast"}
    rows: dict[str, int] = {}
    for node in model.graph.node:
        if node.op_type == "Gather" and len(node.input) == 2 and node.input[0] in tables:
            index = cast_of.get(node.input[1], node.input[1])
            if index not in initializers:
                rows[index] = min(rows.get(index, tables[node.input[0]]), tables[node.input[0]])
    return rows


def _default_values(spec: InputSpec, rows: int | None) -> InputSpec:
    if not _integral(spec.dtype):
        return spec
    if any(word in spec.name.lower() for word in _MASK_WORDS):
        return replace(spec, values="mask")
    low, high = (0, rows) if rows else _INTEGER_DEFAULT
    return replace(spec, values="integers", low=low, high=high)


def model_specs(path: Path, feeds: dict) -> list[InputSpec]:
    """The specs a stage feeds a model with: those of the fp32 export (`path`, whose metadata holds what the
    export stage resolved), with the config's settings, every axis sized."""
    specs = resolve(specs_from_onnx(path), feeds)
    check_sizes(specs, sizes(feeds))
    return specs


# --------------------------------------------------------------------------- the config's say


def resolve(specs: list[InputSpec], feeds: dict, where: str = "model") -> list[InputSpec]:
    """`specs` with the config's shorthand and per-input settings applied: `model.input_shape` (the per-sample
    shape of a single-input model) and `model.inputs.<name>.{shape, dtype, range, padding}`. An input the model
    does not have, a dtype or shape the graph contradicts, or an unknown setting fails, naming the key."""
    input_shape, overrides = feeds.get("input_shape"), feeds.get("inputs") or {}
    if input_shape:
        if len(specs) != 1:
            raise StageInputError(f"{where}.input_shape applies to single-input models; this one has "
                                  f"{len(specs)} inputs: {', '.join(s.name for s in specs)} (set "
                                  f"{where}.inputs.<name>.shape instead)")
        specs = [replace(specs[0], dims=(specs[0].dims[0] if specs[0].dims else BATCH, *input_shape))]
    by_name = {s.name: s for s in specs}
    unknown = sorted(set(overrides) - set(by_name))
    if unknown:
        raise StageInputError(f"{where}.inputs.{unknown[0]}: the model has no input '{unknown[0]}'; its inputs: "
                              f"{', '.join(by_name)}")
    for name, settings in overrides.items():
        by_name[name] = _apply(by_name[name], settings or {}, f"{where}.inputs.{name}")
    return [by_name[s.name] for s in specs]


def declared(name: str, settings: dict, where: str) -> InputSpec:
    """A spec declared entirely by the config (a factory model's `model.inputs.<name>`)."""
    if not settings.get("shape"):
        raise StageInputError(f"{where}.shape is not set: a factory model declares each input's shape, e.g. "
                              f"{where}.shape=[batch,3,224,224] or [batch,sequence]")
    spec = InputSpec(name, tuple(settings["shape"]), np.dtype(settings.get("dtype") or "float32"))
    return _apply(_default_values(spec, None), {k: v for k, v in settings.items() if k not in ("shape", "dtype")},
                  where)


_SETTINGS = ("shape", "dtype", "range", "padding")


def _apply(spec: InputSpec, settings: dict, where: str) -> InputSpec:
    unknown = sorted(set(settings) - set(_SETTINGS))
    if unknown:
        raise StageInputError(f"{where}.{unknown[0]}: not an input setting; valid: {', '.join(_SETTINGS)}")
    if settings.get("shape") is not None:
        spec = replace(spec, dims=_agreeing_dims(spec, tuple(settings["shape"]), f"{where}.shape"))
    if settings.get("dtype") is not None:
        try:
            wanted = np.dtype(settings["dtype"])
        except TypeError:
            raise StageInputError(f"{where}.dtype = '{settings['dtype']}': not a dtype (e.g. float32, int64)") from None
        if wanted != spec.dtype:
            raise StageInputError(f"{where}.dtype = {wanted}: the model's input '{spec.name}' takes {spec.dtype}")
    if settings.get("range") is not None:
        low, high = _range(settings["range"], f"{where}.range")
        spec = replace(spec, values="integers" if _integral(spec.dtype) else "normal", low=low, high=high)
    if settings.get("padding"):
        padding = float(settings["padding"])
        if not 0 <= padding < 1:
            raise StageInputError(f"{where}.padding = {padding}: the share of a mask's zeros, in [0, 1)")
        spec = replace(spec, values="mask", padding=padding)
    return spec


def _agreeing_dims(spec: InputSpec, dims: tuple, where: str) -> tuple:
    """A configured shape, checked against what the model fixes: same rank, the same size where both are ints."""
    if len(dims) != len(spec.dims):
        raise StageInputError(f"{where} = {list(dims)}: the model's input '{spec.name}' has {len(spec.dims)} dims "
                              f"{list(spec.dims)}")
    for given, have in zip(dims, spec.dims):
        if isinstance(given, int) and isinstance(have, int) and given != have:
            raise StageInputError(f"{where} = {list(dims)}: the model fixes input '{spec.name}' to "
                                  f"{list(spec.dims)}")
    return dims


def _range(value, where: str) -> tuple[float, float]:
    if not isinstance(value, (list, tuple)) or len(value) != 2 or not value[0] < value[1]:
        raise StageInputError(f"{where} = {value}: expected [low, high] with low < high (values in [low, high))")
    return value[0], value[1]


# --------------------------------------------------------------------------- sizes and data


def sizes(feeds: dict) -> dict[str, int]:
    """Axis name -> size: `batch_size` for the batch axis, `axes.<name>` for the others."""
    return {**(feeds.get("axes") or {}), BATCH: feeds["batch_size"]}


def concrete_shape(spec: InputSpec, axis_sizes: dict[str, int]) -> tuple[int, ...]:
    shape = []
    for dim in spec.dims:
        if isinstance(dim, int):
            shape.append(dim)
        elif dim in axis_sizes:
            shape.append(axis_sizes[dim])
        else:
            key = "batch_size" if dim == BATCH else f"axes.{dim}"
            fixed = ",".join(str(d) if isinstance(d, int) or d in axis_sizes or d == BATCH else "N" for d in spec.dims)
            raise StageInputError(f"input '{spec.name}' has the axis '{dim}' {list(spec.dims)}, which has no size: "
                                  f"set {key}=N, or fix the input's shape with model.inputs.{spec.name}.shape="
                                  f"[{fixed}]")
    return tuple(shape)


def check_sizes(specs: list[InputSpec], axis_sizes: dict[str, int]) -> None:
    """Every axis of every input sized, and every size >= 1: before any work is done."""
    for spec in specs:
        concrete_shape(spec, axis_sizes)
    first = specs[0].dims[:1] if specs else ()
    if not any(BATCH in s.dims for s in specs) and first and first[0] != axis_sizes[BATCH]:
        raise StageInputError(f"input '{specs[0].name}' has a fixed batch axis of {first[0]}: set batch_size="
                              f"{first[0]}, or export the model with a dynamic batch axis")
    bad = {k: v for k, v in axis_sizes.items() if v < 1}
    if bad:
        name, value = next(iter(bad.items()))
        raise StageInputError(f"{'batch_size' if name == BATCH else 'axes.' + name} = {value}: must be >= 1")


def random_inputs(specs: list[InputSpec], axis_sizes: dict[str, int], seed: int) -> dict[str, np.ndarray]:
    """One seeded array per input, in spec order (the order decides the stream: the same on every backend)."""
    rng = np.random.default_rng(seed)
    return {spec.name: _values(spec, concrete_shape(spec, axis_sizes), rng) for spec in specs}


def _values(spec: InputSpec, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    if spec.values == "mask":
        mask = np.ones(shape, dtype=spec.dtype)
        if spec.padding and shape:
            zeros = int(round(spec.padding * shape[-1]))
            if zeros:
                mask[..., shape[-1] - zeros:] = 0
        return mask
    if spec.values == "integers" or _integral(spec.dtype):
        low, high = (spec.low, spec.high) if spec.low is not None else (
            (0, 2) if spec.dtype == np.bool_ else _INTEGER_DEFAULT)
        return rng.integers(int(low), int(high), size=shape).astype(spec.dtype)
    if _floating(spec.dtype):
        if spec.low is not None:
            return rng.uniform(spec.low, spec.high, size=shape).astype(np.float32).astype(spec.dtype)
        return rng.standard_normal(shape, dtype=np.float32).astype(spec.dtype)
    raise StageInputError(f"input '{spec.name}' has dtype {spec.dtype}, which no data generator covers")


def validation_batches(specs: list[InputSpec], axis_sizes: dict[str, int], seed: int, batches: int):
    """The seeded batches every backend's validation feeds (the same values whatever the backend)."""
    for batch in range(batches):
        yield random_inputs(specs, axis_sizes, seed + SEED_VALIDATION + batch)


def _integral(dtype: np.dtype) -> bool:
    return np.issubdtype(dtype, np.integer) or dtype == np.bool_


def _floating(dtype: np.dtype) -> bool:
    return np.issubdtype(dtype, np.floating) or _is_ml_float(dtype)


def _is_ml_float(dtype: np.dtype) -> bool:
    """bfloat16 and the float8 types (ml_dtypes) are numpy 'void'-kind dtypes, not np.floating."""
    try:
        import ml_dtypes

        ml_dtypes.finfo(dtype)
        return True
    except (ImportError, ValueError, TypeError):
        return False


# --------------------------------------------------------------------------- user data


def check_array(array: np.ndarray, spec: InputSpec, where: str) -> None:
    """The model's shape past the batch axis (a named axis takes any size) and a dtype that converts without
    losing meaning: otherwise the work fails deep inside a framework, or float data is truncated to ints."""
    wanted = f"({', '.join(str(d) for d in spec.dims)})"
    fits = array.ndim == len(spec.dims) and all(isinstance(d, str) or d == n
                                                for d, n in zip(spec.dims[1:], array.shape[1:]))  # any batch
    if not fits:
        raise StageInputError(f"{where} has shape {array.shape}; the model's input needs {wanted}, batch first")
    if not _dtype_fits(array.dtype, spec.dtype):
        raise StageInputError(f"{where} has dtype {array.dtype}; the model's input takes {spec.dtype}")


def _dtype_fits(data: np.dtype, wanted: np.dtype) -> bool:
    integral = _integral(data)
    if _floating(wanted):
        return _floating(data) or integral
    if _integral(wanted):
        return integral  # float data would be truncated silently
    return data == wanted

"""Model inputs: their names and shapes as an ONNX graph declares them, and seeded data to feed them.

Every stage that feeds a model (calibration, benchmark, validation) draws its data here, so the same seed
gives the same tensors whatever the precision or backend being compared.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stages.api import StageInputError

# Offsets keep the streams of different uses apart: calibration data never equals validation data.
SEED_CALIBRATION, SEED_BENCHMARK, SEED_VALIDATION = 1_000, 2_000, 3_000


@dataclass(frozen=True)
class InputSpec:
    name: str
    shape: tuple            # ints, or None for a dynamic axis
    dtype: np.dtype


def specs_from_onnx(path: Path) -> list[InputSpec]:
    """The graph's real inputs (initializers listed as inputs by old exporters are skipped)."""
    import onnx
    from onnx import helper

    model = onnx.load(str(path), load_external_data=False)
    initializers = {i.name for i in model.graph.initializer}
    specs = []
    for value in model.graph.input:
        if value.name in initializers:
            continue
        tensor = value.type.tensor_type
        shape = tuple(d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim)
        specs.append(InputSpec(value.name, shape, np.dtype(helper.tensor_dtype_to_np_dtype(tensor.elem_type))))
    return specs


def concrete_shape(spec: InputSpec, batch_size: int) -> tuple[int, ...]:
    """Axis 0 takes the batch size; any other dynamic axis must be pinned by the model's input_shape."""
    dims = list(spec.shape)
    if not dims:
        return ()
    if dims[0] is None:
        dims[0] = batch_size
    elif dims[0] != batch_size:
        raise StageInputError(f"input '{spec.name}' has a fixed batch axis of {dims[0]}; "
                              f"set batch_size={dims[0]} or export the model with a dynamic batch axis")
    if any(d is None for d in dims[1:]):
        raise StageInputError(
            f"input '{spec.name}' has dynamic axes besides the batch ({spec.shape}); "
            f"set model.input_shape to the per-sample shape, e.g. model.input_shape=[3,224,224]")
    return tuple(dims)


def with_input_shape(specs: list[InputSpec], input_shape: list[int] | None) -> list[InputSpec]:
    """Apply a user-given per-sample shape to a single-input model."""
    if not input_shape:
        return specs
    if len(specs) != 1:
        raise StageInputError(f"model.input_shape applies to single-input models; this one has "
                              f"{len(specs)} inputs: {', '.join(s.name for s in specs)}")
    return [InputSpec(specs[0].name, (None, *input_shape), specs[0].dtype)]


def random_inputs(specs: list[InputSpec], batch_size: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    feeds = {}
    for spec in specs:
        shape = concrete_shape(spec, batch_size)
        if np.issubdtype(spec.dtype, np.floating) or _is_ml_float(spec.dtype):
            feeds[spec.name] = rng.standard_normal(shape, dtype=np.float32).astype(spec.dtype)
        elif np.issubdtype(spec.dtype, np.integer):
            feeds[spec.name] = rng.integers(0, 100, size=shape).astype(spec.dtype)
        elif spec.dtype == np.bool_:
            feeds[spec.name] = rng.integers(0, 2, size=shape).astype(np.bool_)
        else:
            raise StageInputError(f"input '{spec.name}' has dtype {spec.dtype}, which no data generator covers")
    return feeds


def validation_batches(specs: list[InputSpec], batch_size: int, seed: int, batches: int):
    """The seeded batches every backend's validation feeds (the same values whatever the backend)."""
    for batch in range(batches):
        yield random_inputs(specs, batch_size, seed + SEED_VALIDATION + batch)


def _is_ml_float(dtype: np.dtype) -> bool:
    """bfloat16 and the float8 types (ml_dtypes) are numpy 'void'-kind dtypes, not np.floating."""
    try:
        import ml_dtypes

        ml_dtypes.finfo(dtype)
        return True
    except (ImportError, ValueError, TypeError):
        return False


def load_npz(path: str, specs: list[InputSpec], key: str) -> dict[str, np.ndarray]:
    """User-supplied data (calibration): one array per input name, batch axis first."""
    file = Path(path)
    if not file.is_file():
        raise StageInputError(f"{key} = '{path}': file not found")
    try:
        with np.load(file) as data:
            arrays = {name: data[name] for name in data.files}
    except Exception as err:
        raise StageInputError(f"{key} = '{path}': not a readable .npz file ({err})") from err
    missing = [s.name for s in specs if s.name not in arrays]
    if missing:
        raise StageInputError(f"{key} = '{path}' has arrays {sorted(arrays)}; the model needs {missing}")
    for spec in specs:
        _check_array(arrays[spec.name], spec, f"{key} = '{path}': array '{spec.name}'")
    return {s.name: arrays[s.name].astype(s.dtype, copy=False) for s in specs}


def _check_array(array: np.ndarray, spec: InputSpec, where: str) -> None:
    """The model's shape past the batch axis (a dynamic axis takes any size) and a dtype that converts without
    losing meaning: otherwise the calibration fails deep inside ModelOpt, or float data is truncated to ints."""
    dims = ["batch", *("any" if d is None else str(d) for d in spec.shape[1:])] if spec.shape else []
    wanted = f"({', '.join(dims)})"
    fits = array.ndim == len(spec.shape) and all(d is None or d == n for d, n in zip(spec.shape[1:], array.shape[1:]))
    if not fits:
        raise StageInputError(f"{where} has shape {array.shape}; the model's input needs {wanted}, batch first")
    if not _dtype_fits(array.dtype, spec.dtype):
        raise StageInputError(f"{where} has dtype {array.dtype}; the model's input takes {spec.dtype}")


def _dtype_fits(data: np.dtype, wanted: np.dtype) -> bool:
    def floating(d: np.dtype) -> bool:
        return np.issubdtype(d, np.floating) or _is_ml_float(d)

    integral = np.issubdtype(data, np.integer) or data == np.bool_
    if floating(wanted):
        return floating(data) or integral
    if np.issubdtype(wanted, np.integer) or wanted == np.bool_:
        return integral  # float data would be truncated silently
    return data == wanted

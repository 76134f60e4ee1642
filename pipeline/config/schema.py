"""Structured-config schema: what a composed config may contain, checked by OmegaConf at compose time.

A misspelled key or a value of the wrong type fails while Hydra composes, naming the key. Enum fields list
their valid values in the error. Ranges OmegaConf cannot express are checked by `check()` before any stage
runs, with a message that names the key, the bad value and what is valid.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


class ConfigError(ValueError):
    """A config value that is well-typed but invalid; the message names the key."""


class Precision(str, Enum):
    fp32 = "fp32"
    tf32 = "tf32"
    fp16 = "fp16"
    bf16 = "bf16"
    int8 = "int8"
    fp8 = "fp8"


class ModelSource(str, Enum):
    builtin = "builtin"          # stages/models.py, seeded random weights
    onnx = "onnx"                # model.path: the user's ONNX file
    factory = "factory"          # model._target_: a function returning an nn.Module
    hf = "hf"                    # Hugging Face transformers: model.model_type + model.config, or model.path
    timm = "timm"                # model.name from timm
    torchvision = "torchvision"  # model.name from torchvision


class ConvertMode(str, Enum):
    none = "none"          # graph stays fp32 (fp32, tf32)
    autocast = "autocast"  # ModelOpt AutoCast: fp16 / bf16
    quantize = "quantize"  # ModelOpt Q/DQ: int8 / fp8


class CalibrationMethod(str, Enum):
    max = "max"
    entropy = "entropy"


class SyncMode(str, Enum):
    spin = "spin"          # poll the event: lowest wake-up latency, one core busy
    blocking = "blocking"  # cudaEventBlockingSync: the thread sleeps until the GPU is done


class PinMode(str, Enum):
    auto = "auto"  # a process that sees several GPUs takes one of its own (stages/gpu/pinning.py)
    off = "off"    # CUDA_VISIBLE_DEVICES stays as the launcher or the shell set it


class IsolationMode(str, Enum):
    auto = "auto"  # stages that declare themselves crash-prone (engine builds)
    all = "all"    # every artifact stage
    none = "none"


@dataclass
class ModelConfig:
    name: str = MISSING
    source: ModelSource = ModelSource.builtin
    path: Optional[str] = None               # onnx: the user's ONNX file; hf: a saved model's directory
    _target_: Optional[str] = None           # factory: "pkg.module.function"
    kwargs: Dict[str, Any] = field(default_factory=dict)  # factory: its keyword arguments
    input_shape: Optional[List[int]] = None  # one float input's per-sample shape (no batch axis)
    # per input: shape ([batch, sequence]: ints are fixed, names are axes), dtype, range ([low, high)), padding
    inputs: Dict[str, Any] = field(default_factory=dict)
    num_classes: Optional[int] = None
    model_type: Optional[str] = None         # hf: e.g. bert, vit (built from its config with seeded weights)
    task: Optional[str] = None               # hf: feature-extraction, sequence-classification, image-classification...
    config: Dict[str, Any] = field(default_factory=dict)  # hf: config keys (hidden_size, num_hidden_layers...)


@dataclass
class PrecisionConfig:
    name: Precision = MISSING
    convert: ConvertMode = ConvertMode.none
    tf32: bool = False


@dataclass
class ExportConfig:
    opset: int = 18


@dataclass
class CalibrationConfig:
    method: CalibrationMethod = CalibrationMethod.max
    samples: int = 64
    data: Any = None  # a .npz or {_target_: ...} as validate.data; None = seeded random data


@dataclass
class ConvertConfig:
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    high_precision_dtype: str = "fp32"  # what stays un-quantized; ModelOpt's own default would be fp16
    keep_io_types: bool = True


@dataclass
class BenchmarkConfig:
    warmup_ms: float = 200.0
    duration_s: float = 3.0
    min_iterations: int = 10
    trials: int = 1               # repeated timed loops; the spread between their medians is reported
    # the host loop and the GPU harness: time on until the window medians agree (stages/stability.py; keys checked
    # by check()).
    # conf/config.yaml turns it on; a run recorded before it existed gets {}: off, measured as it was.
    until_stable: Dict[str, Any] = field(default_factory=dict)
    # GPU harness only:
    cuda_graph: bool = True       # capture one inference in a CUDA graph; falls back to plain enqueue if capture fails
    sync: SyncMode = SyncMode.spin
    data_transfers: bool = False  # H2D/D2H copies from pinned host buffers on their own streams
    streams: int = 1              # concurrent inference streams; >1 makes throughput the headline


@dataclass
class ProfileConfig:
    enabled: bool = True
    iterations: int = 10


@dataclass
class ReportConfig:
    enabled: bool = True  # an HTML report at the end of a sweep


@dataclass
class GpuConfig:
    pin: PinMode = PinMode.auto


@dataclass
class IsolationConfig:
    mode: IsolationMode = IsolationMode.auto
    timeout_s: float = 3600.0  # a child stage still running after this is killed and the job fails


@dataclass
class ValidateConfig:
    batches: int = 4          # seeded random batches, when there is no data
    # real data: a .npz (one array per input, batch first, optional `labels`) or {_target_: pkg.fn, <kwargs>}
    # yielding batches (dicts of arrays, optional `labels`); with labels, classifier outputs get top-1 accuracy
    data: Any = None
    max_samples: int = 1024   # of the data set, at most
    # {_target_: pkg.fn, higher_is_better: true, <kwargs>}: fn(outputs, labels) -> float, on the task output
    metric: Any = None


class VerifyMode(str, Enum):
    fast = "fast"  # size and mtime against the manifest; a file that differs is re-hashed
    full = "full"  # re-hash every file of an entry on every hit


@dataclass
class CacheConfig:
    dir: str = "outputs/cache"
    enabled: bool = True
    verify: VerifyMode = VerifyMode.fast


@dataclass
class SelectConfig:
    # The build to ship: the fastest by `metric` among the points whose accuracy stays close to the fp32
    # reference: with labels, a top-1 drop of at most max_accuracy_drop (0.01 = one point of top-1); without,
    # the first output's relative error (rel_l2_err) at most max_relative_error.
    metric: str = "latency/median"  # a summary metric/stat, lower is better (throughput/*: higher is better)
    max_accuracy_drop: float = 0.01   # with labels: the absolute top-1 drop against the fp32 reference
    max_relative_error: float = 0.05  # without labels: the first output's rel_l2_err against fp32
    min_top1_agreement: float = 0.99  # without labels, for class scores: top-1 decisions that match fp32's
    confidence: float = 0.95          # of the paired interval on the top-1 drop (pipeline/analysis/paired.py)
    accuracy: str = "auto"            # what is bounded: auto | top1 | agreement | task/<name> (e.g. task/r2)
    max_task_drop: float = 0.01       # select.accuracy=task/<name>: its drop against fp32, in its own units
    per_workload: bool = True         # one answer per batch size / named-axis size; false: one over every point


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    # a backend's own config: name, plugin, dag and its options, typed by its plugin (pipeline/run/plugins.py)
    backend: Any = MISSING
    precision: PrecisionConfig = MISSING
    batch_size: int = 1
    axes: Dict[str, int] = field(default_factory=dict)  # the size of every other named axis: axes.sequence=128
    # the sizes a built model must serve per axis, [min, opt, max] (an engine's optimization profile);
    # an axis not named here serves the run's size only
    shapes: Dict[str, List[int]] = field(default_factory=dict)
    feeds: Any = None  # derived (conf/config.yaml): what a stage needs to size and fill the inputs
    seed: int = 0
    export: ExportConfig = field(default_factory=ExportConfig)
    convert: ConvertConfig = field(default_factory=ConvertConfig)
    benchmark: BenchmarkConfig = field(default_factory=BenchmarkConfig)
    profile: ProfileConfig = field(default_factory=ProfileConfig)
    validate: ValidateConfig = field(default_factory=ValidateConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    select: SelectConfig = field(default_factory=SelectConfig)
    isolation: IsolationConfig = field(default_factory=IsolationConfig)
    gpu: GpuConfig = field(default_factory=GpuConfig)
    resume: bool = False  # a re-run into an existing sweep directory keeps its ok jobs with the same config
    cache: CacheConfig = field(default_factory=CacheConfig)


# Nodes whose keys are the user's to name (axes.<name>, model.inputs.<name>...): open, so `axes.sequence=128` needs
# no `+`; their values are still typed.
OPEN = ("axes", "shapes", "model.inputs", "model.kwargs", "model.config")


def register() -> None:
    from omegaconf import OmegaConf

    node = OmegaConf.structured(Config)
    for key in OPEN:
        OmegaConf.set_struct(OmegaConf.select(node, key), False)
    ConfigStore.instance().store(name="schema", node=node)
    # ${visible_gpus:}: how many GPUs this process may use; ${visible_gpus:1}: at least 1 (a worker count)
    OmegaConf.register_new_resolver("visible_gpus", _visible_gpus, replace=True)


def _visible_gpus(at_least: int = 0) -> int:
    from stages.gpu import pinning

    return max(len(pinning.visible()), int(at_least))


# key -> (lowest valid, highest valid or None); checked before any stage runs
_RANGES = {
    "batch_size": (1, None),
    "export.opset": (13, None),
    "convert.calibration.samples": (1, None),
    "benchmark.warmup_ms": (0, None),
    "benchmark.duration_s": (0, None),
    "benchmark.min_iterations": (1, None),
    "benchmark.trials": (1, None),
    "benchmark.streams": (1, None),
    "profile.iterations": (1, None),
    "isolation.timeout_s": (1, None),
    "validate.batches": (1, None),
    "validate.max_samples": (1, None),
    "select.max_accuracy_drop": (0, None),
    "select.max_relative_error": (0, None),
}


def _floats(node: Any, path: str = ""):
    """(dotted key, value) of every float in the config (OmegaConf takes 'nan' and 'inf' for a float key)."""
    if isinstance(node, dict):
        for key, value in node.items():
            here = f"{path}.{key}" if path else str(key)
            if here != "backend.dag":  # the DAG's params repeat the keys above: name those, not the copies
                yield from _floats(value, here)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _floats(value, f"{path}[{i}]")
    elif isinstance(node, float):
        yield path, node


def lookup(config: dict, dotted: str) -> Any:
    """config["a"]["b"] for "a.b"; None where a part is missing (a config that failed to compose)."""
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def metric_key(metric: str) -> tuple[str, str]:
    """('latency', 'median') from select.metric = 'latency/median'."""
    name, _, stat = metric.partition("/")
    if not name or not stat or "/" in stat:
        raise ConfigError(f"select.metric = '{metric}': expected <metric>/<stat> of the summary table, "
                          f"e.g. latency/median, latency/p99, throughput/samples_per_s")
    return name, stat


def check(cfg: dict) -> None:
    """Raise ConfigError for the first out-of-range or inconsistent value of a resolved config."""
    for key, value in _floats(cfg):
        if not math.isfinite(value):
            raise ConfigError(f"{key} = {value}: must be a finite number")
    for key, (lo, hi) in _RANGES.items():
        value = lookup(cfg, key)
        if value < lo or (hi is not None and value > hi):
            valid = f"{lo}..{hi}" if hi is not None else f">= {lo}"
            raise ConfigError(f"{key} = {value} is out of range; valid: {valid}")
    _check_until_stable(lookup(cfg, "benchmark.until_stable"))
    model = cfg["model"]
    if model["source"] == "onnx" and not model.get("path"):
        raise ConfigError("model.path is not set; model=onnx needs model.path=/path/to/model.onnx")
    if model["source"] == "factory" and not model.get("_target_"):
        raise ConfigError("model._target_ is not set; model=factory needs model._target_=package.module.function")
    if model.get("input_shape") is not None and any(d < 1 for d in model["input_shape"]):
        raise ConfigError(f"model.input_shape = {model['input_shape']}: every dimension must be >= 1")
    metric_key(str(lookup(cfg, "select.metric") or ""))
    metric = lookup(cfg, "validate.metric")
    if metric is not None and not (isinstance(metric, dict) and metric.get("_target_")):
        raise ConfigError(f"validate.metric = {metric!r}: expected {{_target_: package.module.function, ...}}")
    if metric is not None and not lookup(cfg, "validate.data"):
        raise ConfigError("validate.metric is set but validate.data is not: a task metric needs labelled data")
    for axis, size in (cfg.get("axes") or {}).items():
        if size < 1:
            raise ConfigError(f"axes.{axis} = {size}: must be >= 1")
    for axis, sizes in (cfg.get("shapes") or {}).items():
        if len(sizes) != 3 or not 1 <= sizes[0] <= sizes[1] <= sizes[2]:
            raise ConfigError(f"shapes.{axis} = {sizes}: expected [min, opt, max] with 1 <= min <= opt <= max")


def _check_until_stable(value: Any) -> None:
    from stages import stability
    from stages.api import ParamError

    try:
        stability.Rule.from_param(value)
    except ParamError as err:
        raise ConfigError(str(err)) from None


def check_types(cfg: Any, schema: type = Config, path: str = "") -> None:
    """Raise ConfigError for the first key of a plain config (a recorded one, maybe edited by hand) that the
    schema refuses: a section (or a key without a default) missing, a section that is not a mapping, a value of
    the wrong type, an enum value not among its choices. A key with a default that a section lacks (recorded
    before the key existed) is given its default. A config Hydra composed always passes: OmegaConf checked the
    same then."""
    import dataclasses
    import typing

    hints = typing.get_type_hints(schema)
    for f in dataclasses.fields(schema):
        key = f"{path}.{f.name}" if path else f.name
        if isinstance(cfg, dict) and f.name not in cfg and not dataclasses.is_dataclass(hints[f.name]):
            if f.default is not dataclasses.MISSING and f.default is not MISSING:
                cfg[f.name] = f.default.value if isinstance(f.default, Enum) else f.default
            elif f.default_factory is not dataclasses.MISSING:
                cfg[f.name] = f.default_factory()
        if not isinstance(cfg, dict) or f.name not in cfg:
            raise ConfigError(f"{key} is missing and has no default (pipeline/config/schema.py): restore it")
        _check_type(cfg[f.name], hints[f.name], key)


def _check_type(value: Any, hint: Any, key: str) -> None:
    import dataclasses
    import typing

    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return
    if origin is typing.Union:  # Optional[X]
        if value is None and type(None) in args:
            return
        hint = next(a for a in args if a is not type(None))
        origin, args = typing.get_origin(hint), typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            keys = ", ".join(f.name for f in dataclasses.fields(hint))
            raise ConfigError(f"{key} = {value!r}: expected a mapping of {keys}")
        check_types(value, hint, key)
        return
    if isinstance(hint, type) and issubclass(hint, Enum):
        valid = [e.value for e in hint]
        if value not in valid:
            raise ConfigError(f"{key} = {value!r}: valid: {', '.join(valid)}")
        return
    if origin in (list, dict):
        if not isinstance(value, origin):
            raise ConfigError(f"{key} = {value!r}: expected a {'list' if origin is list else 'mapping'}")
        items = enumerate(value) if origin is list else value.items()
        for k, v in items:
            _check_type(v, args[-1], f"{key}[{k}]" if origin is list else f"{key}.{k}")
        return
    wanted = {bool: (bool,), int: (int,), float: (int, float), str: (str,)}.get(hint, (hint,))
    if not isinstance(value, wanted) or (isinstance(value, bool) and hint is not bool):
        names = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
        raise ConfigError(f"{key} = {value!r}: expected {names.get(hint, getattr(hint, '__name__', str(hint)))}, "
                          f"got {type(value).__name__}")

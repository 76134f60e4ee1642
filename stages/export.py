"""Export stage: a torch model (stages/sources.py: built-in, factory, Hugging Face, timm, torchvision) to ONNX, or a
user's ONNX file checked and taken in. Output: `onnx`, the fp32 reference graph every later stage starts from.

Every named axis of every input (`batch`, `sequence`, ...) becomes a dynamic dim of that name, so one export serves
every size (a sequence sweep exports once). The inputs' specs (stages/inputs.py), with the config's settings
applied, are recorded in the graph's metadata, so every backend draws the same values for them. Before anything is
exported, every axis must have a size (`batch_size`, `axes.<name>`) and every `model.inputs.<name>` must name an
input the model has, with a dtype and shape the model accepts.
"""
from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path

from stages import datasets, sources, targets
from stages import inputs as model_inputs
from stages.api import Param, StageInputError, StageResult, file_sha256, package_version

VERSION = "4"  # 3: several inputs, named dynamic axes, specs in the metadata; 4: traced at the run's axis sizes
OUTPUTS = ("onnx",)
CACHED = True
PARAMS = {"model": Param(dict), "seed": Param(int), "opset": Param(int, min=13),
          # sizes are checked here but change nothing exported: every named axis is dynamic
          "feeds": Param(dict, keyed=False)}
FILE = "model.onnx"
_EXTERNAL_DATA_BYTES = 1536 << 20  # ONNX protobufs cap at 2 GiB; larger weights go to a side file
_MIN_OPSET = 13  # the config's own lower bound (pipeline/config/schema.py), named in the error for too high a one

log = logging.getLogger(__name__)


def environment(params: dict) -> dict:
    if params["model"]["source"] == "onnx":
        return {"onnx": package_version("onnx")}
    return {**{name: package_version(name) for name in ("torch", "onnx", "onnxscript")},
            **sources.provider_versions(params["model"])}


def key_files(params: dict) -> dict:
    model = params["model"]
    if model["source"] == "onnx":
        return {"model.path": _user_file_digest(model["path"])}
    if model["source"] == "factory":
        return {"model._target_": targets.factory_source_digest(model["_target_"])}
    if model["source"] == "hf" and model.get("path"):
        return {"model.path": directory_digest(Path(model["path"]))}
    return {}


def directory_digest(path: Path) -> str:
    """A saved model directory by content: every file's relative name and bytes."""
    import hashlib

    if not path.is_dir():
        raise StageInputError(f"model.path = '{path}': not a directory (a saved transformers model is one)")
    h = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(f"{file.relative_to(path)} {file_sha256(file)}\n".encode())
    return h.hexdigest()


def run(inputs: dict, params: dict, out_dir: Path) -> StageResult:
    model = params["model"]
    out = out_dir / FILE
    if model["source"] == "onnx":
        info = _take_onnx(Path(model["path"]), out, params["feeds"])
    else:
        info = _export_torch(model, params["seed"], params["opset"], params["feeds"], out)
    _check(out, key="model.path" if model["source"] == "onnx" else "export")
    return StageResult(outputs={"onnx": FILE}, info=info)


def _user_file(path) -> Path:
    """The user's ONNX file, or one line saying why it cannot be one (onnx.load reads an empty file as an empty
    model, and a directory gives an OS error)."""
    file = Path(path)
    if file.is_dir():
        raise StageInputError(f"model.path = '{path}': is a directory; give the .onnx file itself")
    if not file.is_file():
        raise StageInputError(f"model.path = '{path}': file not found")
    if file.stat().st_size == 0:
        raise StageInputError(f"model.path = '{path}': the file is empty (0 bytes); expected an ONNX model")
    return file


def _user_file_digest(path: str) -> str:
    file = _user_file(path)
    digest = file_sha256(file)
    for side in file.parent.glob(f"{file.name}.data"):  # external weights change the model too
        digest += file_sha256(side)
    return digest


def check_served(outputs: dict, params: dict) -> None:
    """On a hit too, the data (feeds, not in the key) must fit the model before any later stage works."""
    datasets.check_all(params["feeds"], model_inputs.model_specs(outputs["onnx"], params["feeds"]))


def _take_onnx(src: Path, out: Path, feeds: dict) -> dict:
    import onnx

    _user_file(src)
    try:
        proto = onnx.load(str(src))
    except Exception as err:
        raise StageInputError(f"model.path = '{src}': not a readable ONNX model ({err})") from err
    _require_tensor_outputs(proto, src)
    _save(proto, out)
    specs = model_inputs.resolve(model_inputs.specs_from_onnx(out), feeds)
    model_inputs.check_sizes(specs, model_inputs.sizes(feeds))
    datasets.check_all(feeds, specs)
    _record_specs(out, specs)
    return {"source_file": src.name, "opset": _opset(proto), **_describe(specs)}


def _require_tensor_outputs(proto, src: Path) -> None:
    """Every output is compared with the fp32 reference as an array: a sequence or a map (scikit-learn's ZipMap
    probabilities) is refused by name, saying how to export without it."""
    for value in proto.graph.output:
        kind = value.type.WhichOneof("value")
        if kind != "tensor_type":
            raise StageInputError(f"model.path = '{src}': output '{value.name}' is a {kind.replace('_type', '')}, "
                                  f"not a tensor (scikit-learn's ZipMap makes one); export it as a tensor (skl2onnx: "
                                  f"options={{id(model): {{'zipmap': False}}}})")


def _export_torch(model_cfg: dict, seed: int, opset: int, feeds: dict, out: Path) -> dict:
    _check_opset(opset)
    built = sources.build(model_cfg, seed, sizes=model_inputs.sizes(feeds))
    if model_cfg["source"] == "factory":
        targets.warn_unkeyed(built.module, model_cfg["_target_"])
    specs = model_inputs.resolve(built.specs, feeds)
    model_inputs.check_sizes(specs, model_inputs.sizes(feeds))
    datasets.check_all(feeds, specs)
    example = sources.example(specs, model_inputs.sizes(feeds))
    n_params = sum(p.numel() for p in built.module.parameters())
    exporter, fallback_reason = "dynamo", None
    try:
        _export_dynamo(built.module, example, specs, built.output_names, opset, out,
                       external=n_params * 4 > _EXTERNAL_DATA_BYTES)
    except Exception as err:  # some models only go through the TorchScript exporter
        if not _exporter_cannot(err):
            raise  # disk full, out of memory, a bug: a fallback would be cached as this model's export
        exporter, fallback_reason = "torchscript", f"{type(err).__name__}: {str(err).splitlines()[0][:300]}"
        log.warning("dynamo export failed (%s); falling back to the TorchScript exporter", fallback_reason)
        for stale in out.parent.glob(f"{out.name}*"):
            stale.unlink()
        _export_torchscript(built.module, example, specs, built.output_names, opset, out)
    _record_specs(out, specs)
    info = {"exporter": exporter, **_written_opset(out, opset), "parameters": n_params, **_describe(specs),
            "outputs": ",".join(built.output_names)}
    if fallback_reason:
        info["dynamo_error"] = fallback_reason
    return info


def _describe(specs: list[model_inputs.InputSpec]) -> dict:
    """`inputs` for the runs row ("input_ids[batch,sequence]:int64 ..."), and a single input's per-sample shape."""
    info = {"inputs": " ".join(f"{s.name}[{','.join(map(str, s.dims))}]:{s.dtype.name}" for s in specs)}
    if len(specs) == 1 and all(isinstance(d, int) for d in specs[0].dims[1:]):
        info["input_shape"] = "x".join(map(str, specs[0].dims[1:]))
    return info


def _record_specs(out: Path, specs: list[model_inputs.InputSpec]) -> None:
    """The specs in the graph's metadata: what every stage downstream draws its values from."""
    import onnx

    proto = onnx.load(str(out), load_external_data=False)
    by_name = {s.name: s for s in specs}
    for value in proto.graph.input:  # a dynamic dim the graph leaves unnamed gets its axis's name: tools downstream
        spec = by_name.get(value.name)  # (ModelOpt) fail on a dim with neither a size nor a name
        for dim, axis in zip(value.type.tensor_type.shape.dim, spec.dims if spec else ()):
            if isinstance(axis, str) and not (dim.HasField("dim_value") and dim.dim_value > 0):
                dim.dim_param = axis
    kept = [p for p in proto.metadata_props if p.key != model_inputs.METADATA_KEY]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    proto.metadata_props.add(key=model_inputs.METADATA_KEY, value=model_inputs.dumps(specs))
    onnx.save(proto, str(out))  # external weights stay where they are: the graph refers to them by name


def _dims(specs: list[model_inputs.InputSpec]) -> list[dict[int, str]]:
    """Per input, axis index -> axis name, for every named axis."""
    return [{i: d for i, d in enumerate(s.dims) if isinstance(d, str)} for s in specs]


def _exporter_cannot(err: BaseException) -> bool:
    """True when the dynamo exporter says it cannot export this model: its own errors (torch.onnx's
    OnnxExporterError: TorchExportError when torch.export cannot capture, ConversionError when a graph cannot
    be translated) or torch.export's (dynamo's UserError, Unsupported). Not when anything in the chain of causes
    is the environment (OSError: a full disk; MemoryError): that is transient, and it must not decide what is
    cached under this model's key."""
    import torch._dynamo.exc
    import torch.onnx.errors

    chain, seen = [], err
    while seen is not None and len(chain) < 32:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    if any(isinstance(e, (OSError, MemoryError)) for e in chain):
        return False
    return isinstance(err, (torch.onnx.errors.OnnxExporterError, torch._dynamo.exc.TorchDynamoException))


def _newest_opset() -> int:
    """The newest opset the dynamo exporter writes: it builds the graph at torchlib's opset and converts it to the
    requested one with onnx's version converter, which knows opsets up to the installed onnx's newest."""
    import onnx.defs

    return onnx.defs.onnx_opset_version()


def _check_opset(opset: int) -> None:
    newest = _newest_opset()
    if opset > newest:  # the exporter would keep its own opset and write that instead
        raise StageInputError(f"export.opset = {opset}: the installed exporter writes opsets up to {newest} "
                              f"(onnx {package_version('onnx')}); valid range: {_MIN_OPSET}-{newest}")


def _written_opset(out: Path, requested: int) -> dict:
    """The opset the file has (the exporter keeps its own when it cannot convert a graph down), and the one asked
    for when they differ: the row never claims an opset the file does not have."""
    import onnx

    written = _opset(onnx.load(str(out), load_external_data=False))
    if written == requested:
        return {"opset": written}
    log.warning("export.opset = %s: the exporter wrote opset %s (it could not convert this model to %s)",
                requested, written, requested)
    return {"opset": written, "opset_requested": requested}


def _export_dynamo(model, example: tuple, specs, output_names, opset: int, out: Path, external: bool) -> None:
    import inspect

    import torch

    dim = {}  # one Dim per axis name: inputs that share an axis share its size
    per_input = tuple({i: dim.setdefault(name, torch.export.Dim(name, min=1)) for i, name in axes.items()}
                      for axes in _dims(specs))
    first = next(iter(inspect.signature(model.forward).parameters.values()), None)
    varargs = first is not None and first.kind is inspect.Parameter.VAR_POSITIONAL
    chatter = io.StringIO()  # the exporter prints progress lines to stdout; keep them in the debug log
    # onnxscript logs a traceback when it cannot convert a graph to the requested opset; _written_opset says it
    with contextlib.redirect_stdout(chatter), warnings.catch_warnings(), _quiet_logger("torch.onnx"), \
            _quiet_logger("onnxscript"):
        warnings.simplefilter("ignore")
        torch.onnx.export(model, example, str(out), dynamo=True, opset_version=opset, verbose=False,
                          input_names=[s.name for s in specs], output_names=output_names,
                          dynamic_shapes=(per_input,) if varargs else per_input, external_data=external)
    log.debug("%s", chatter.getvalue())


@contextlib.contextmanager
def _quiet_logger(name: str):
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)  # e.g. "torchvision is not installed. Skipping torchvision::nms"
    try:
        yield
    finally:
        logger.setLevel(level)


def _export_torchscript(model, example: tuple, specs, output_names, opset: int, out: Path) -> None:
    import torch

    axes = {s.name: dims for s, dims in zip(specs, _dims(specs))}
    axes.update({name: {0: model_inputs.BATCH} for name in output_names})  # outputs: batch first, as a rule
    torch.onnx.export(model, example, str(out), dynamo=False, opset_version=opset,
                      input_names=[s.name for s in specs], output_names=output_names, dynamic_axes=axes)


def _save(proto, out: Path) -> None:
    import onnx

    large = proto.ByteSize() > _EXTERNAL_DATA_BYTES
    onnx.save(proto, str(out), save_as_external_data=large, location=f"{out.name}.data" if large else None)


def _check(path: Path, key: str) -> None:
    import onnx

    try:
        onnx.checker.check_model(str(path))
    except Exception as err:
        raise StageInputError(f"{key}: the ONNX model fails onnx.checker: {str(err).splitlines()[0]}") from err


def _opset(proto) -> int:
    return next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)

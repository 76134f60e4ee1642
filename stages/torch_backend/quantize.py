"""int8 and fp8 on the torch backend: real low-precision kernels from torchao, applied before torch.compile.

`backend.quantization` names a recipe; the precision stays `int8` or `fp8` and the recipe picks the kernel:

- fp8_dynamic_rowwise (fp8): Float8DynamicActivationFloat8WeightConfig(granularity=PerRow()): an fp8 GEMM
  (torch._scaled_mm) with a scale per activation row, computed at run time, and per weight row;
- fp8_dynamic_tensorwise (fp8): the same with granularity=PerTensor(): one scale per tensor;
- fp8_static (fp8): Float8StaticActivationFloat8WeightConfig, torchao's observer flow (prepare, calibrate, convert):
  per-tensor activation scales calibrated once, so no amax reduction runs at inference and the cast can fuse into
  the op that produces the activation;
- int8_dynamic (int8): Int8DynamicActivationInt8WeightConfig(): an int8 GEMM (torch._int_mm), per-row activation
  scales at run time, per-channel weight scales;
- int8_static (int8): Int8StaticActivationInt8WeightConfig(act_quant_scale=..., granularity=[PerTensor(), PerRow()]),
  one per layer: per-tensor activation scales calibrated once (max of |activation|);
- int8_weight_only (int8): Int8WeightOnlyConfig(): int8 weights dequantized inside a bf16 GEMM (less weight traffic,
  compute stays bf16).

`auto` (the default) is `none` for fp32/tf32/fp16/bf16, `int8_dynamic` for int8 and `fp8_dynamic_rowwise` for fp8.
What is not quantized (activations between layers, norms, attention, the kept layers) runs in bf16: the dtype
torchao's fp8 rowwise kernels need. torchao quantizes Linear layers; a 1x1 stride-1 convolution is a Linear over the
channels, so it is rewritten as one first (ResNet's bottlenecks), the other convolutions stay bf16 (torchao's fp8
convolution needs the separate mslk package). `backend.keep_high_precision` lists the layers that stay bf16, as
module-name patterns (fnmatch: `head`, `blocks.0.*`, `*proj`) and `@first` / `@last`: the first and the last Linear or
convolution in the model (the stem / patch embedding and the classifier head), ModelOpt's usual exceptions.

Every recipe here is a real kernel; none is fake quantization (ModelOpt's torch fake quant would only simulate the
accuracy, timed at high precision, so it is not offered). Where the kernels cannot run the stage says why: on CPU,
on a GPU below the recipe's compute capability (fp8: 8.9), and without torchao.
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Callable, Iterable

from stages.api import ParamError, Unsupported, package_version


@dataclass(frozen=True)
class Recipe:
    precision: str                      # int8 | fp8: the precision it implements
    min_cc: tuple[int, int]             # the compute capability its kernel needs
    static: bool                        # activation scales calibrated once (needs calibration data)
    config: str                         # the torchao config it builds (said in errors and docs)
    kernel: str                         # what runs, for the row


RECIPES: dict[str, Recipe] = {
    "fp8_dynamic_rowwise": Recipe(
        "fp8", (8, 9), False, "Float8DynamicActivationFloat8WeightConfig(granularity=PerRow())",
        "fp8 e4m3 GEMM (torch._scaled_mm), per-row scales, activation scales computed at run time"),
    "fp8_dynamic_tensorwise": Recipe(
        "fp8", (8, 9), False, "Float8DynamicActivationFloat8WeightConfig(granularity=PerTensor())",
        "fp8 e4m3 GEMM (torch._scaled_mm), per-tensor scales, activation scale computed at run time"),
    "fp8_static": Recipe(
        "fp8", (8, 9), True, "Float8StaticActivationFloat8WeightConfig(step='prepare'/'convert')",
        "fp8 e4m3 GEMM (torch._scaled_mm), per-tensor activation scales calibrated once"),
    "int8_dynamic": Recipe(
        "int8", (8, 0), False, "Int8DynamicActivationInt8WeightConfig()",
        "int8 GEMM (torch._int_mm), per-row activation scales at run time, per-channel weight scales"),
    "int8_static": Recipe(
        "int8", (8, 0), True, "Int8StaticActivationInt8WeightConfig(act_quant_scale=..., granularity=[PerTensor(), "
                              "PerRow()])",
        "int8 GEMM (torch._int_mm), per-tensor activation scales calibrated once, per-channel weight scales"),
    "int8_weight_only": Recipe(
        "int8", (7, 0), False, "Int8WeightOnlyConfig()",
        "weight-only: int8 weights dequantized inside a bf16 GEMM (less weight traffic; compute in bf16)"),
}
AUTO = {"int8": "int8_dynamic", "fp8": "fp8_dynamic_rowwise"}  # backend.quantization=auto
CHOICES = ("auto", "none", *RECIPES)
FIRST, LAST = "@first", "@last"
DEFAULT_KEEP = (FIRST, LAST)
HIGH_PRECISION = "bf16"  # what is not quantized runs in this dtype
PROVIDER = "torchao"
HOW_TO_GET = ("install torchao built for this torch: pip install -e '.[gpu]' (torchao 0.18 for torch 2.11; offline: "
              "tests/gpu/wheels.sh fetches its wheel)")
# The inductor settings torchao recommends for its quantized graphs (torchao.quantization.utils.
# recommended_inductor_config_setter), applied only around the compile of a quantized point: torchao would set them
# for the whole process, and the next point of a sweep would then be compiled differently from what it says. Hence
# every config below is made with set_inductor_config=False. Of the setter's other settings, fx_graph_cache is
# inductor.py's (scoped to the pipeline's cache), triton.unique_kernel_names only names kernels, and
# set_float32_matmul_precision("high") (TF32 for the whole process) is left out: a quantized point computes in bf16.
INDUCTOR = {"coordinate_descent_tuning": True, "coordinate_descent_check_all_directions": True,
            "force_fuse_int_mm_with_mul": True}


def resolve(precision: str, quantization: str) -> str | None:
    """The recipe a (precision, backend.quantization) pair runs, or None for no quantization; ParamError for a
    pair that contradicts itself."""
    if quantization not in CHOICES:
        raise ParamError(f"backend.quantization = '{quantization}': valid: {', '.join(CHOICES)}")
    if quantization == "auto":
        return AUTO.get(precision)
    if quantization == "none":
        if precision in AUTO:
            raise ParamError(f"backend.quantization = 'none' with precision={precision}: the torch backend has no "
                             f"{precision} path without a recipe; valid for {precision}: auto, "
                             f"{', '.join(for_precision(precision))}")
        return None
    recipe = RECIPES[quantization]
    if recipe.precision != precision:
        valid = ", ".join(("auto", *for_precision(precision))) if precision in AUTO else "auto, none"
        raise ParamError(f"backend.quantization = '{quantization}' is a {recipe.precision} recipe; it runs with "
                         f"precision={recipe.precision}, not precision={precision} (valid with {precision}: {valid})")
    return quantization


def for_precision(precision: str) -> list[str]:
    return [name for name, r in RECIPES.items() if r.precision == precision]


def label(recipe: str | None) -> str:
    """What the row says ran: `torchao:fp8_dynamic_rowwise`, or `none`."""
    return f"{PROVIDER}:{recipe}" if recipe else "none"


def check_runnable(recipe: str, device: str, capability: tuple[int, int] | None = None) -> None:
    """Unsupported, naming the recipe and what it needs, where its kernel cannot run: on CPU, on a GPU below its
    compute capability (`capability`: torch.cuda.get_device_capability()), without torchao (or a torchao without
    its config)."""
    r = RECIPES[recipe]
    where = f"backend.quantization={recipe} ({PROVIDER} {r.config}, precision={r.precision})"
    if device != "cuda":
        raise Unsupported(
            f"{where}: the torch backend times torchao's recipes on CUDA only. On CPU there is no {r.precision} kernel "
            f"it can vouch for (torch.compile'd torchao int8 computes its matmuls in fp32 there, and fp8 has no CPU "
            f"GEMM), so the row would be fake-quant timed at high precision; run it on an NVIDIA GPU "
            f"(backend.device=cuda), or use backend=onnxruntime / tensorrt for {r.precision}")
    if capability is not None and tuple(capability) < r.min_cc:
        need = ".".join(map(str, r.min_cc))
        raise Unsupported(f"{where}: its kernel needs an NVIDIA GPU of compute capability {need} or higher "
                          f"({'fp8 tensor cores: Ada, Hopper or newer' if r.precision == 'fp8' else 'int8 GEMM'}); "
                          f"this GPU has {capability[0]}.{capability[1]}")
    try:
        import torchao.quantization as tq  # noqa: F401
    except Exception as err:  # noqa: BLE001 - not installed, or its compiled ops do not load against this torch
        raise Unsupported(f"{where}: torchao does not import here ({type(err).__name__}: "
                          f"{str(err).splitlines()[0][:160] if str(err) else ''}); {HOW_TO_GET}") from None
    missing = [n for n in _config_names(recipe) if not hasattr(tq, n)]
    if missing:
        raise Unsupported(f"{where}: torchao {package_version('torchao')} has no {missing[0]}; {HOW_TO_GET}")


def _config_names(recipe: str) -> tuple[str, ...]:
    config = RECIPES[recipe].config.split("(")[0]
    grains = ("PerRow", "PerTensor") if "PerRow" in RECIPES[recipe].config else (
        ("PerTensor",) if "PerTensor" in RECIPES[recipe].config else ())
    return (config, "quantize_", *grains)


# --------------------------------------------------------------------------- which layers


@dataclass
class Selection:
    """What a recipe applies to: layer (module) names in the model's registration order."""
    targets: list[str]           # to quantize (Linear layers, and 1x1 convolutions rewritten as Linear)
    kept: list[str]              # matched by backend.keep_high_precision: stay bf16
    other: list[str]             # Linear/conv layers torchao cannot take (3x3 convs, MultiheadAttention's)
    convs_as_linear: list[str]   # the 1x1 convolutions among the targets
    unmatched: list[str]         # keep patterns that match no layer (a typo, or a pattern for another model)


def layers(module) -> list[tuple[str, object]]:
    """(name, module) of every Linear and convolution, in registration order (for the models here, the order of the
    forward pass): what `@first` and `@last` count among."""
    import torch

    kinds = (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)
    return [(name, m) for name, m in module.named_modules() if name and isinstance(m, kinds)]


def check_keep(patterns) -> list[str]:
    if not isinstance(patterns, (list, tuple)) or not all(isinstance(p, str) and p for p in patterns):
        raise ParamError(f"backend.keep_high_precision = {patterns!r}: expected a list of module-name patterns "
                         f"(fnmatch, e.g. [{FIRST}, {LAST}, '*head*']); {FIRST} / {LAST} are the first / last Linear "
                         f"or convolution")
    return list(patterns)


def select(module, keep: Iterable[str]) -> Selection:
    import torch

    found = layers(module)
    names = [n for n, _ in found]
    keep = check_keep(keep)
    special = {FIRST: names[:1], LAST: names[-1:]}
    kept: set[str] = set()
    unmatched = []
    for pattern in keep:
        hits = special[pattern] if pattern in special else [n for n in names if fnmatch.fnmatchcase(n, pattern)]
        kept.update(hits)
        if not hits:
            unmatched.append(pattern)
    targets, other, convs = [], [], []
    for name, m in found:
        if name in kept:
            continue
        if isinstance(m, torch.nn.modules.linear.NonDynamicallyQuantizableLinear):
            other.append(name)  # MultiheadAttention's out_proj: used by its fused kernel, not as a Linear
        elif isinstance(m, torch.nn.Linear):
            targets.append(name)
        elif _pointwise_conv(m):
            targets.append(name)
            convs.append(name)
        else:
            other.append(name)
    return Selection(targets, [n for n in names if n in kept], other, convs, unmatched)


def _pointwise_conv(m) -> bool:
    import torch

    return (isinstance(m, torch.nn.Conv2d) and m.kernel_size == (1, 1) and m.stride == (1, 1)
            and m.padding in ((0, 0), "valid") and m.dilation == (1, 1) and m.groups == 1
            and m.padding_mode == "zeros")


def _conv_as_linear_class():
    import torch

    class PointwiseConvAsLinear(torch.nn.Module):
        """A 1x1 stride-1 convolution computed as the Linear it is, over the channel axis (NCHW in and out; with
        channels_last activations both permutes are free views)."""

        def __init__(self, conv):
            super().__init__()
            self.linear = torch.nn.Linear(conv.in_channels, conv.out_channels, bias=conv.bias is not None,
                                          device=conv.weight.device, dtype=conv.weight.dtype)
            self.linear.weight = torch.nn.Parameter(conv.weight.detach().flatten(1), requires_grad=False)
            if conv.bias is not None:
                self.linear.bias = torch.nn.Parameter(conv.bias.detach(), requires_grad=False)

        def forward(self, x):
            return self.linear(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)

    return PointwiseConvAsLinear


def rewrite_convs(module, names: list[str]) -> dict[str, str]:
    """Replace each named 1x1 convolution by its Linear; returns conv name -> the Linear's name."""
    cls = _conv_as_linear_class()
    renamed = {}
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = module.get_submodule(parent_name) if parent_name else module
        setattr(parent, child, cls(getattr(parent, child)))
        renamed[name] = f"{name}.linear"
    return renamed


# --------------------------------------------------------------------------- applying a recipe


def apply(module, recipe: str, keep: Iterable[str], calibrate: Callable[[Callable], int] | None = None) -> dict:
    """Quantize `module` (on its device, in bf16) in place with `recipe`; its layers named by `keep` stay bf16.
    `calibrate(run)` feeds the calibration batches through `run(*args)` and returns how many samples it fed (static
    recipes only). Returns what the row records. Unsupported when torchao quantized no layer."""
    sel = select(module, keep)
    info = {"quantization": label(recipe), "quantization_kernel": RECIPES[recipe].kernel,
            "torchao": package_version("torchao"), "keep_high_precision": ",".join(sel.kept) or "none"}
    if not sel.targets:
        raise Unsupported(f"backend.quantization={recipe}: this model has no layer torchao can quantize outside "
                          f"backend.keep_high_precision ({len(sel.kept)} kept: {', '.join(sel.kept) or 'none'}; "
                          f"{len(sel.other)} it cannot take: convolutions other than 1x1, MultiheadAttention)")
    renamed = rewrite_convs(module, sel.convs_as_linear)
    targets = {renamed.get(n, n) for n in sel.targets}
    if RECIPES[recipe].static:
        if calibrate is None:
            raise ValueError(f"{recipe} calibrates its activation scales: calibration data is needed")
        info["calibration_samples"] = _STATIC[recipe](module, targets, calibrate)
    else:
        import torchao.quantization as tq

        tq.quantize_(module, _dynamic_config(recipe), filter_fn=_in(targets))
    done = [n for n in sorted(targets) if _is_quantized(module.get_submodule(n))]
    original = {v: k for k, v in renamed.items()}
    if not done:
        raise Unsupported(f"backend.quantization={recipe}: torchao left every targeted layer in bf16 ({len(targets)} "
                          f"targets; fp8 needs both dimensions of a weight to be multiples of 16), so the row "
                          f"would be bf16 under a {RECIPES[recipe].precision} label")
    info.update({"quantized": summarise([original.get(n, n) for n in done]),
                 "quantized_layers": len(done), "skipped_layers": len(targets) - len(done),
                 "kept_layers": len(sel.kept), "convs_as_linear": len(sel.convs_as_linear),
                 "other_high_precision_layers": len(sel.other)})
    if sel.unmatched:
        info["keep_unmatched"] = ",".join(sel.unmatched)
    return info


def summarise(names: Iterable[str]) -> str:
    """Layer names with their block indices folded (`blocks.*.attn.qkv`): which layers, in a runs column."""
    import re

    return ",".join(sorted({re.sub(r"(?<=\.)\d+(?=\.|$)", "*", name) for name in names}))


def _in(targets: set[str]):
    import torch

    return lambda m, fqn: fqn in targets and isinstance(m, torch.nn.Linear)


def _dynamic_config(recipe: str):
    import torchao.quantization as tq

    if recipe == "fp8_dynamic_rowwise":
        return tq.Float8DynamicActivationFloat8WeightConfig(granularity=tq.PerRow(), set_inductor_config=False)
    if recipe == "fp8_dynamic_tensorwise":
        return tq.Float8DynamicActivationFloat8WeightConfig(granularity=tq.PerTensor(), set_inductor_config=False)
    if recipe == "int8_dynamic":
        return tq.Int8DynamicActivationInt8WeightConfig(set_inductor_config=False)
    if recipe == "int8_weight_only":
        return tq.Int8WeightOnlyConfig(set_inductor_config=False)
    raise KeyError(recipe)


def _fp8_static(module, targets: set[str], calibrate) -> int:
    """torchao's observer flow: observers on the targets, the calibration batches, then fp8 weights with the
    observed per-tensor activation scales."""
    import torchao.quantization as tq

    tq.quantize_(module, tq.Float8StaticActivationFloat8WeightConfig(step="prepare", set_inductor_config=False),
                 filter_fn=_in(targets))
    samples = calibrate(module)
    tq.quantize_(module, tq.Float8StaticActivationFloat8WeightConfig(step="convert", set_inductor_config=False),
                 filter_fn=_in(targets))
    return samples


def _int8_static(module, targets: set[str], calibrate) -> int:
    """Per layer, the largest |activation| seen over the calibration batches (max calibration), as a symmetric
    per-tensor int8 scale; then one torchao config per layer with its own scale."""
    import torch
    import torchao.quantization as tq

    amax: dict[str, list] = {}

    def observe(name):
        def hook(mod, args):
            x = args[0].detach()
            seen = amax.setdefault(name, [0.0, x.dim()])
            seen[0] = max(seen[0], float(x.abs().amax()))
        return hook

    handles = [module.get_submodule(n).register_forward_pre_hook(observe(n)) for n in sorted(targets)]
    try:
        samples = calibrate(module)
    finally:
        for h in handles:
            h.remove()
    for name in sorted(targets):
        if name not in amax:
            continue  # not reached by the calibration forward: left in bf16 (counted as skipped)
        peak, ndim = amax[name]
        weight = module.get_submodule(name).weight
        scale = torch.full((1,) * ndim, max(peak, 1e-12) / 127.0, dtype=torch.float32, device=weight.device)
        config = tq.Int8StaticActivationInt8WeightConfig(act_quant_scale=scale, set_inductor_config=False,
                                                         granularity=[tq.PerTensor(), tq.PerRow()])
        tq.quantize_(module, config, filter_fn=_in({name}))
    return samples


_STATIC = {"fp8_static": _fp8_static, "int8_static": _int8_static}


def _is_quantized(layer) -> bool:
    import torch

    weight = getattr(layer, "weight", None)
    return weight is not None and type(weight) not in (torch.Tensor, torch.nn.Parameter)


def tensor_bytes(t) -> int:
    """Bytes a tensor holds, a torchao tensor subclass's inner tensors (data, scales) added up."""
    import torch

    if type(t) not in (torch.Tensor, torch.nn.Parameter) and hasattr(t, "__tensor_flatten__"):
        inner, _ = t.__tensor_flatten__()
        return sum(tensor_bytes(getattr(t, name)) for name in inner if getattr(t, name, None) is not None)
    return t.numel() * t.element_size()


def module_bytes(module) -> int:
    """What a model's parameters and buffers take in memory (quantized weights at their real size)."""
    seen, total = set(), 0
    for t in [*module.parameters(), *module.buffers()]:
        if id(t) not in seen:
            seen.add(id(t))
            total += tensor_bytes(t)
    return total

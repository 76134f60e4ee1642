"""The compiled model lives in this process between the compile stage and the stages that use it.

A torch.compile'd callable cannot be written to disk, so the compile stage keeps it here under a token and
writes the token (with what was compiled, and how to build it again) to a small JSON file: its output. Benchmark and
validate read the file and look the callable up; where they run in another process than the compile stage (each in a
child: backend.isolate_measurements), they build it again from the weights (opened.open_compiled).
"""
from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

_LIVE: dict[str, "Compiled"] = {}


@dataclass
class Compiled:
    fn: Callable                 # what is timed: eager module or torch.compile'd
    reference: Any               # the fp32 eager module (validation), moved to `device` on its first call
    device: str                  # "cuda" or "cpu"
    dtype: str                   # the precision: fp32 | tf32 | fp16 | bf16 | int8 | fp8 (precision.torch_dtype)
    specs: list                  # the inputs, in the order the callable takes them (stages.inputs.InputSpec)
    output_names: list[str]
    channels_last: bool
    flops: int | None            # per inference at the compiled sizes
    batch_size: int
    quantization: str = "none"   # what ran: `torchao:<recipe>`, or none
    weights_bytes: int | None = None  # what the timed model's parameters and buffers take in memory
    build_path: str = "eager"    # aoti (a loaded AOTInductor package) | compile (torch.compile in-process) | eager
    reference_device: str | None = None  # where the reference runs (None: `device`); a package's: the CPU
    built_here: dict = field(default_factory=dict)  # built again by a measuring stage (another process): what it took


def on_device(module, device: str):
    """`module` (the fp32 reference) kept on the CPU until its first call, then moved to `device` for good: the
    benchmark's peak-memory figure then counts only the model being timed, not the reference the validation needs
    (the validation stage runs after the benchmark)."""
    if device == "cpu":
        return module
    import torch

    class OnFirstCall(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner, self.moved = inner, False

        def forward(self, *args):
            if not self.moved:
                with torch.inference_mode(False), torch.no_grad():  # ordinary tensors, whatever mode calls it
                    self.inner.to(device)
                self.moved = True
            return self.inner(*args)

    return OnFirstCall(module).eval()


def release() -> None:
    """Free the previous job's model before this job builds its own (one job at a time per process), so this one's
    memory figures count only itself: its callable, the graphs torch.compile keeps for it, the cached blocks."""
    _LIVE.clear()
    import gc

    import torch

    torch._dynamo.reset()
    gc.collect()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def register(compiled: Compiled, out: Path, rebuild: dict) -> None:
    """Keep `compiled` in this process under a new token and write the handle; `rebuild` (the weights, the build
    path and the compile stage's params) lets another process build the same callable (opened.open_compiled)."""
    token = uuid.uuid4().hex
    _LIVE.clear()  # one job at a time per process: free the previous job's model and GPU memory
    _LIVE[token] = compiled
    out.write_text(json.dumps({"token": token, "device": compiled.device, "dtype": compiled.dtype,
                               "flops": compiled.flops, "batch_size": compiled.batch_size,
                               "quantization": compiled.quantization, "rebuild": rebuild}))


def here(handle: Path) -> bool:
    """Whether the handle's callable lives in this process (registered here, or a package: loaded from its file)."""
    recorded = json.loads(Path(handle).read_text())
    return recorded.get("path") == "aoti" or recorded.get("token") in _LIVE


def built_here(handle: Path, build: Callable[[], Compiled]) -> Compiled:
    """The callable of a handle registered in another process (the compile stage ran in a child), built by `build()`
    on the first call in this process and kept for the job's other measuring stages here."""
    key = str(Path(handle).resolve())
    if key not in _LIVE:
        release()
        _LIVE[key] = build()
    return _LIVE[key]


def lookup(handle: Path) -> Compiled:
    recorded = json.loads(Path(handle).read_text())
    if recorded.get("path") == "aoti":
        return open_package(recorded)
    token = recorded["token"]
    try:
        return _LIVE[token]
    except KeyError:
        raise RuntimeError(f"compiled model {token} is not in this process: torch stages of one job must run "
                           f"in the same process as its compile stage") from None


def open_package(recorded: dict) -> Compiled:
    """An AOTInductor package (stages/torch_backend/build.py), loaded: the timed callable; its fp32 reference is the
    eager model built from the weights on the CPU when validation first calls it (TF32 off)."""
    import torch

    from stages import inputs as model_inputs
    from stages.torch_backend import package

    meta = package.read(Path(recorded["build"]))
    fn = torch._inductor.aoti_load_package(meta["package"])
    return Compiled(fn, FromWeights(Path(recorded["weights"])), meta["device"], meta["dtype"],
                    model_inputs.loads(meta["specs"]), meta["output_names"], meta["channels_last"], meta["flops"],
                    meta["batch_size"], meta["quantization"], meta.get("weights_bytes"), "aoti", "cpu")


class FromWeights:
    """The fp32 eager model of a weights file (the model stage's output), built on its first call, on the CPU."""

    def __init__(self, weights: Path):
        self.weights, self.module = weights, None

    def __call__(self, *args):
        if self.module is None:
            import torch

            from stages.torch_backend import model

            built = model.instantiate(json.loads((self.weights.parent / model.SPEC).read_text()))
            built.module.load_state_dict(torch.load(self.weights, map_location="cpu", weights_only=True))
            self.module = built.module.eval()
        return self.module(*args)

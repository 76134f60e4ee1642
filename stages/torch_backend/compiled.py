"""The compiled model lives in this process between the compile stage and the stages that use it.

A torch.compile'd callable cannot be written to disk, so the compile stage keeps it here under a token and
writes the token (with what was compiled) to a small JSON file: its output. Benchmark and validate read the
file and look the callable up. The runner runs a job's nodes in one process, so the lookup always hits.
"""
from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

_LIVE: dict[str, "Compiled"] = {}


@dataclass
class Compiled:
    fn: Callable                 # what is timed: eager module or torch.compile'd
    reference: Any               # the fp32 eager module on the same device (validation)
    device: str                  # "cuda" or "cpu"
    dtype: str                   # fp32 | tf32 | fp16 | bf16
    specs: list                  # the inputs, in the order the callable takes them (stages.inputs.InputSpec)
    output_names: list[str]
    channels_last: bool
    flops: int | None            # per inference at the compiled sizes
    batch_size: int


def register(compiled: Compiled, out: Path) -> None:
    token = uuid.uuid4().hex
    _LIVE.clear()  # one job at a time per process: free the previous job's model and GPU memory
    _LIVE[token] = compiled
    out.write_text(json.dumps({"token": token, "device": compiled.device, "dtype": compiled.dtype,
                               "flops": compiled.flops, "batch_size": compiled.batch_size}))


def lookup(handle: Path) -> Compiled:
    token = json.loads(Path(handle).read_text())["token"]
    try:
        return _LIVE[token]
    except KeyError:
        raise RuntimeError(f"compiled model {token} is not in this process: torch stages of one job must run "
                           f"in the same process as its compile stage") from None

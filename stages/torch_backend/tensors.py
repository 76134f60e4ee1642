"""Seeded inputs as torch tensors, drawn by the same generator as every other backend (stages/inputs.py)."""
from __future__ import annotations

import numpy as np

from stages import inputs as model_inputs


def seeded(shape: tuple, batch_size: int, seed: int, device: str, dtype, channels_last: bool = False):
    import torch

    spec = model_inputs.InputSpec("input", (None, *shape), np.dtype(np.float32))
    array = model_inputs.random_inputs([spec], batch_size, seed)["input"]
    x = torch.from_numpy(array).to(device=device, dtype=dtype)
    return x.contiguous(memory_format=torch.channels_last) if channels_last and x.dim() == 4 else x

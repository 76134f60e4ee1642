"""Seeded inputs as torch tensors, drawn by the same generator as every other backend (stages/inputs.py)."""
from __future__ import annotations

from stages import inputs as model_inputs


def place(arrays: dict, device: str, dtype, channels_last: bool = False) -> tuple:
    """numpy inputs as the tensors a model takes, in order: on `device`, floats in `dtype` (integer ids and masks
    keep theirs), 4-d floats in channels-last memory format when asked."""
    import torch

    out = []
    for value in arrays.values():
        x = torch.from_numpy(value).to(device)
        if x.is_floating_point():
            x = x.to(dtype)
            if channels_last and x.dim() == 4:
                x = x.contiguous(memory_format=torch.channels_last)
        out.append(x)
    return tuple(out)


def seeded(specs: list, sizes: dict[str, int], seed: int, device: str, dtype, channels_last: bool = False) -> tuple:
    return place(model_inputs.random_inputs(specs, sizes, seed), device, dtype, channels_last)

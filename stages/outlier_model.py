"""A small network that full int8 breaks, for the precision planner's example and tests (pipeline/run/planner.py).

Its middle layer takes activations with a few huge channels (an "outlier" layer, as in LLMs' LLM.int8 finding):
a per-tensor int8 scale calibrated to them (ModelOpt's `max`) leaves the ordinary channels a step or two of the
256, so that layer's output is ruined while every other layer quantizes well. Keeping that one layer in high
precision restores the accuracy.
"""
from __future__ import annotations

OUTLIER_CHANNELS = (3, 17, 40)  # of fc1's 64 outputs: scaled by `outlier_scale`
WIDTH = 64


def outlier_mlp(outlier_scale: float = 200.0, num_classes: int = 10, seed: int = 0):
    """Linear(64,64)-ReLU-Linear(64,64)-ReLU-Linear(64,64)-ReLU-Linear(64,classes) on a float input of 64, seeded
    random weights; fc1's OUTLIER_CHANNELS are `outlier_scale` times larger and fc2 reads them as much smaller, so
    the network's function is ordinary while fc2's input range is not."""
    import torch
    from torch import nn

    with torch.random.fork_rng(devices=[]):
        torch.random.default_generator.manual_seed(seed)
        model = nn.Sequential()
        model.add_module("fc1", nn.Linear(WIDTH, WIDTH))
        model.add_module("relu1", nn.ReLU())
        model.add_module("fc2", nn.Linear(WIDTH, WIDTH))
        model.add_module("relu2", nn.ReLU())
        model.add_module("fc3", nn.Linear(WIDTH, WIDTH))
        model.add_module("relu3", nn.ReLU())
        model.add_module("head", nn.Linear(WIDTH, num_classes))
        with torch.no_grad():
            channels = list(OUTLIER_CHANNELS)
            model.fc1.weight[channels] *= outlier_scale
            model.fc1.bias[channels] = outlier_scale  # positive: the outliers survive the ReLU
            model.fc2.weight[:, channels] /= outlier_scale
    return model.eval()

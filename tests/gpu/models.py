"""Small models for the GPU tests: compiled in seconds, with layers every recipe quantizes."""


def mlp(width: int = 512, features: int = 256, classes: int = 16):
    """Four Linear layers, every dimension a multiple of 16 (fp8's GEMMs need that): with the first and the last kept
    in bf16 (backend.keep_high_precision's default), two are quantized. Input: model.input_shape=[features]."""
    import torch

    torch.manual_seed(5)
    return torch.nn.Sequential(
        torch.nn.Linear(features, width), torch.nn.GELU(),
        torch.nn.Linear(width, width), torch.nn.GELU(),
        torch.nn.Linear(width, width), torch.nn.GELU(),
        torch.nn.Linear(width, classes),
    ).eval()

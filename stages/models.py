"""Built-in models (pure PyTorch), and the training of the one that is trained (digits).

This module is imported on code paths that must start fast, so it does not
import torch at module level. The nn.Module classes are defined on first use
by ``_classes()`` and are also reachable as attributes of this module
(``stages.models.ResNet`` ...) through a module ``__getattr__``, which keeps
them picklable.

Public API:

* ``BUILTIN``: name -> (default input shape (C, H, W), number of classes)
* ``build_builtin(name, seed=0, num_classes=None)``: deterministic random weights, eval mode
* ``train_digits(module, seed)``: the ``digits`` CNN trained on scikit-learn's digits (stages/datasets.py)
A user's model factory is code a config names: stages/targets.py.
"""

from __future__ import annotations

import functools
import hashlib
from types import SimpleNamespace
from typing import Any

__all__ = ["BUILTIN", "build_builtin", "train_digits"]

BUILTIN: dict[str, tuple[tuple[int, int, int], int]] = {
    "digits": ((1, 8, 8), 10),  # tiny_cnn's layers, trained on scikit-learn's digits (train_digits)
    "tiny_cnn": ((3, 32, 32), 100),
    "resnet18": ((3, 224, 224), 1000),
    "resnet50": ((3, 224, 224), 1000),
    "vit_tiny": ((3, 224, 224), 1000),
    "vit_b16": ((3, 224, 224), 1000),
    "vit_l16": ((3, 224, 224), 1000),
}

# name -> keyword arguments of the ViT constructor
_VIT_CONFIGS: dict[str, dict[str, int]] = {
    "vit_tiny": dict(patch_size=16, dim=192, depth=12, heads=3, mlp_dim=768),
    "vit_b16": dict(patch_size=16, dim=768, depth=12, heads=12, mlp_dim=3072),
    "vit_l16": dict(patch_size=16, dim=1024, depth=24, heads=16, mlp_dim=4096),
}

_CLASS_NAMES = (
    "TinyCNN",
    "BasicBlock",
    "Bottleneck",
    "ResNet",
    "Attention",
    "Mlp",
    "Block",
    "PatchEmbed",
    "VisionTransformer",
)


# --------------------------------------------------------------------------- model classes


@functools.lru_cache(maxsize=None)
def _classes() -> SimpleNamespace:
    """Import torch and define the model classes (once)."""
    import torch
    from torch import nn

    def _conv_bn_init(module: nn.Module) -> None:
        # torchvision's ResNet initialisation (biases zeroed, as everywhere here)
        for m in module.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                # weight keeps PyTorch's default (uniform, bound 1/sqrt(fan_in))
                nn.init.zeros_(m.bias)

    class TinyCNN(nn.Module):
        """3 conv+BN+ReLU layers (32, 64, 64 channels), global average pool, linear head."""

        def __init__(self, num_classes: int = 100, in_channels: int = 3) -> None:
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(in_channels, 32, 3, padding=1, bias=False),
                nn.BatchNorm2d(32),
                nn.ReLU(inplace=True),
                nn.Conv2d(32, 64, 3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(64),
                nn.ReLU(inplace=True),
                nn.Conv2d(64, 64, 3, padding=1, bias=False),
                nn.BatchNorm2d(64),
                nn.ReLU(inplace=True),
            )
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(64, num_classes)
            _conv_bn_init(self)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.pool(self.features(x))
            return self.fc(torch.flatten(x, 1))

    class BasicBlock(nn.Module):
        expansion = 1

        def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(planes)
            self.relu = nn.ReLU(inplace=True)
            self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
            self.bn2 = nn.BatchNorm2d(planes)
            self.downsample = downsample

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            identity = x if self.downsample is None else self.downsample(x)
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            return self.relu(out + identity)

    class Bottleneck(nn.Module):
        """ResNet v1.5 bottleneck: the stride sits on the 3x3 conv (as in torchvision)."""

        expansion = 4

        def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(planes)
            self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
            self.bn2 = nn.BatchNorm2d(planes)
            self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
            self.bn3 = nn.BatchNorm2d(planes * self.expansion)
            self.relu = nn.ReLU(inplace=True)
            self.downsample = downsample

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            identity = x if self.downsample is None else self.downsample(x)
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.relu(self.bn2(self.conv2(out)))
            out = self.bn3(self.conv3(out))
            return self.relu(out + identity)

    class ResNet(nn.Module):
        """torchvision's ResNet (same module names, so its state_dicts load as-is)."""

        def __init__(self, block: type, layers: list[int], num_classes: int = 1000) -> None:
            super().__init__()
            self.inplanes = 64
            self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
            self.bn1 = nn.BatchNorm2d(64)
            self.relu = nn.ReLU(inplace=True)
            self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
            self.layer1 = self._make_layer(block, 64, layers[0])
            self.layer2 = self._make_layer(block, 128, layers[1], stride=2)
            self.layer3 = self._make_layer(block, 256, layers[2], stride=2)
            self.layer4 = self._make_layer(block, 512, layers[3], stride=2)
            self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
            self.fc = nn.Linear(512 * block.expansion, num_classes)
            _conv_bn_init(self)

        def _make_layer(self, block: type, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
            downsample = None
            if stride != 1 or self.inplanes != planes * block.expansion:
                downsample = nn.Sequential(
                    nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride=stride, bias=False),
                    nn.BatchNorm2d(planes * block.expansion),
                )
            layers = [block(self.inplanes, planes, stride, downsample)]
            self.inplanes = planes * block.expansion
            layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
            return nn.Sequential(*layers)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
            x = torch.flatten(self.avgpool(x), 1)
            return self.fc(x)

    class Attention(nn.Module):
        """Multi-head self-attention with one qkv Linear, computed by scaled_dot_product_attention: its fused
        (flash / memory-efficient) kernels on a GPU, and it still exports to ONNX (as MatMul/Softmax)."""

        def __init__(self, dim: int, heads: int) -> None:
            super().__init__()
            if dim % heads:
                raise ValueError(f"dim {dim} is not divisible by heads {heads}")
            self.heads = heads
            self.head_dim = dim // heads
            self.qkv = nn.Linear(dim, dim * 3)
            self.proj = nn.Linear(dim, dim)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            b, n, c = x.shape
            qkv = self.qkv(x).reshape(b, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
            q, k, v = qkv[0], qkv[1], qkv[2]  # (B, heads, N, head_dim)
            out = torch.nn.functional.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, c)
            return self.proj(out)

    class Mlp(nn.Module):
        def __init__(self, dim: int, hidden: int) -> None:
            super().__init__()
            self.fc1 = nn.Linear(dim, hidden)
            self.act = nn.GELU()
            self.fc2 = nn.Linear(hidden, dim)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc2(self.act(self.fc1(x)))

    class Block(nn.Module):
        """Pre-norm transformer encoder block."""

        def __init__(self, dim: int, heads: int, mlp_dim: int) -> None:
            super().__init__()
            self.norm1 = nn.LayerNorm(dim, eps=1e-6)
            self.attn = Attention(dim, heads)
            self.norm2 = nn.LayerNorm(dim, eps=1e-6)
            self.mlp = Mlp(dim, mlp_dim)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = x + self.attn(self.norm1(x))
            return x + self.mlp(self.norm2(x))

    class PatchEmbed(nn.Module):
        def __init__(self, patch_size: int, in_channels: int, dim: int) -> None:
            super().__init__()
            self.proj = nn.Conv2d(in_channels, dim, patch_size, stride=patch_size)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.proj(x).flatten(2).transpose(1, 2)  # (B, N, dim)

    class VisionTransformer(nn.Module):
        """ViT (timm module names): class token + learned position embedding, linear head on the class token."""

        def __init__(
            self,
            image_size: int = 224,
            patch_size: int = 16,
            dim: int = 768,
            depth: int = 12,
            heads: int = 12,
            mlp_dim: int = 3072,
            num_classes: int = 1000,
            in_channels: int = 3,
        ) -> None:
            super().__init__()
            if image_size % patch_size:
                raise ValueError(f"image_size {image_size} is not divisible by patch_size {patch_size}")
            self.image_size = image_size
            self.patch_size = patch_size
            num_patches = (image_size // patch_size) ** 2
            self.patch_embed = PatchEmbed(patch_size, in_channels, dim)
            self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
            self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, dim))
            self.blocks = nn.Sequential(*[Block(dim, heads, mlp_dim) for _ in range(depth)])
            self.norm = nn.LayerNorm(dim, eps=1e-6)
            self.head = nn.Linear(dim, num_classes)
            self._init_weights()

        def _init_weights(self) -> None:
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
            nn.init.trunc_normal_(self.cls_token, std=0.02)
            # patch projection: LeCun-normal style (as torchvision's ViT conv_proj)
            w = self.patch_embed.proj.weight
            nn.init.trunc_normal_(w, std=(1.0 / (w.shape[1] * w.shape[2] * w.shape[3])) ** 0.5)
            nn.init.zeros_(self.patch_embed.proj.bias)
            for m in self.modules():
                if isinstance(m, nn.Linear):
                    nn.init.trunc_normal_(m.weight, std=0.02)
                    nn.init.zeros_(m.bias)
                elif isinstance(m, nn.LayerNorm):
                    nn.init.ones_(m.weight)
                    nn.init.zeros_(m.bias)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.patch_embed(x)
            cls = self.cls_token.expand(x.shape[0], -1, -1)
            x = torch.cat([cls, x], dim=1) + self.pos_embed
            x = self.norm(self.blocks(x))
            return self.head(x[:, 0])

    ns = SimpleNamespace(
        TinyCNN=TinyCNN,
        BasicBlock=BasicBlock,
        Bottleneck=Bottleneck,
        ResNet=ResNet,
        Attention=Attention,
        Mlp=Mlp,
        Block=Block,
        PatchEmbed=PatchEmbed,
        VisionTransformer=VisionTransformer,
    )
    # Make the classes look module-level (nice reprs; pickle finds them via __getattr__ below).
    for name, cls in vars(ns).items():
        cls.__module__ = __name__
        cls.__qualname__ = name
    return ns


def __getattr__(name: str) -> Any:  # PEP 562: lazy access to the model classes
    if name in _CLASS_NAMES:
        return getattr(_classes(), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# --------------------------------------------------------------------------- built-in models


def _construct(name: str, num_classes: int) -> Any:
    c = _classes()
    if name in ("tiny_cnn", "digits"):
        return c.TinyCNN(num_classes=num_classes, in_channels=BUILTIN[name][0][0])
    if name == "resnet18":
        return c.ResNet(c.BasicBlock, [2, 2, 2, 2], num_classes=num_classes)
    if name == "resnet50":
        return c.ResNet(c.Bottleneck, [3, 4, 6, 3], num_classes=num_classes)
    if name in _VIT_CONFIGS:
        (ch, h, _w), _ = BUILTIN[name]
        return c.VisionTransformer(image_size=h, in_channels=ch, num_classes=num_classes, **_VIT_CONFIGS[name])
    raise AssertionError(name)  # pragma: no cover - guarded by build_builtin


def build_builtin(name: str, seed: int = 0, num_classes: int | None = None):
    """Build a built-in model with deterministic random weights, in eval() mode, on CPU in float32.

    The weights depend only on (name, seed, num_classes). The caller's global RNG
    state (CPU generator; CUDA generators are never touched) is left as it was.
    """
    if name not in BUILTIN:
        raise ValueError(f"model.name: unknown built-in model {name!r}; valid: {', '.join(sorted(BUILTIN))}")
    if num_classes is None:
        num_classes = BUILTIN[name][1]
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"model.num_classes: expected a positive integer, got {num_classes!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"model.seed: expected an integer, got {seed!r}")

    import torch

    old_dtype = torch.get_default_dtype()
    # fork_rng(devices=[]) saves/restores the CPU generator only; seeding default_generator
    # (rather than torch.manual_seed) leaves the CUDA generators alone.
    with torch.random.fork_rng(devices=[]), torch.device("cpu"):
        try:
            torch.set_default_dtype(torch.float32)
            torch.random.default_generator.manual_seed(seed)
            model = _construct(name, num_classes)
        finally:
            torch.set_default_dtype(old_dtype)
    return model.eval()


TRAINED = ("digits",)  # built-ins whose weights are trained, not random: their build trains them
TRAIN_EPOCHS, TRAIN_BATCH, TRAIN_LR, TRAIN_THREADS = 8, 64, 3e-3, 2


def training_recipe() -> str:
    """What the trained weights depend on besides the seed and the data: in the cache key of their export."""
    import inspect

    settings = f"{TRAIN_EPOCHS} {TRAIN_BATCH} {TRAIN_LR} {TRAIN_THREADS}\n{inspect.getsource(train_digits)}"
    return hashlib.sha256(settings.encode()).hexdigest()


def train_digits(model, seed: int = 0):
    """Train `model` on the train split of scikit-learn's digits (stages/datasets.py): seeded (the order of the
    batches; the split itself is fixed), deterministic, a few seconds on a CPU. Returns it in eval mode."""
    import torch

    from stages.datasets import digits

    data = digits("train")[0]
    x, y = torch.from_numpy(data["input"]), torch.from_numpy(data["labels"])
    order_rng = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=TRAIN_LR)
    deterministic, threads = torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(TRAIN_THREADS)  # sums split over threads round differently: fixed, one result everywhere
    try:
        model.train()
        for _ in range(TRAIN_EPOCHS):
            order = torch.randperm(len(x), generator=order_rng)
            for start in range(0, len(x), TRAIN_BATCH):
                rows = order[start:start + TRAIN_BATCH]
                optimizer.zero_grad()
                torch.nn.functional.cross_entropy(model(x[rows]), y[rows]).backward()
                optimizer.step()
    finally:
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
        torch.set_num_threads(threads)
    return model.eval()

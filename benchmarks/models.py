"""Models the benchmarks bring the way a user would (``--model benchmarks/models.py:NAME``), for cases the
built-in CNNs do not cover."""

from __future__ import annotations

from torch import nn


def small_vit(num_classes: int = 10) -> nn.Module:
    """A ViT-Tiny-shaped transformer for 96 px inputs (patches of 8: 144 tokens; 6 layers of width 192, 3 heads):
    the kind of model whose activations (softmax, GELU, LayerNorm outputs) uniform int8 calibration handles worst."""
    from tuner.zoo import torchvision_models  # torchvision as the tuner imports it (works on the CPU torch wheel)

    return torchvision_models().VisionTransformer(
        image_size=96, patch_size=8, num_layers=6, num_heads=3, hidden_dim=192, mlp_dim=768, num_classes=num_classes
    )

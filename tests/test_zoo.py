"""The reference architectures the benchmarks use: each builds, compresses, keeps its output shape."""

from __future__ import annotations

import pytest
import torch

import shrink
from shrink import zoo

CASES = {
    "resnet18": (lambda: zoo.resnet18(num_classes=10), (1, 3, 64, 64)),
    "resnet50": (lambda: zoo.resnet50(num_classes=10), (1, 3, 64, 64)),
    "mobilenet_v2": (lambda: zoo.mobilenet_v2(num_classes=10), (1, 3, 64, 64)),
    "convnext": (lambda: zoo.ConvNeXt(depths=(1, 1, 1, 1), dims=(16, 32, 64, 128), num_classes=10), (1, 3, 64, 64)),
    "vgg11": (lambda: zoo.vgg11(num_classes=10), (1, 3, 64, 64)),
    "vit": (lambda: zoo.ViT(image=32, patch=8, dim=64, depth=2, heads=4, num_classes=10), (1, 3, 32, 32)),
    "digits": (lambda: zoo.DigitsNet(width=8), (1, 1, 8, 8)),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_zoo_model_compresses(name):
    factory, shape = CASES[name]
    model, x = factory().eval(), torch.randn(shape)
    result = shrink.compress(model, x, ratio=0.5)
    with torch.no_grad():
        assert result.model(x).shape == model(x).shape == (1, 10)
    assert result.macs_ratio > 2.5  # half of every group's channels: MACs fall by close to 4


def test_transformer_compresses_heads_and_width():
    model = zoo.transformer(depth=2, dim=64, heads=4).eval()
    ids = torch.randint(0, 1000, (1, 16))
    result = shrink.compress(model, ids, ratio=0.5)
    assert result.model.blocks[0].attn.num_heads == 2 and result.model.blocks[0].fc1.out_features == 128
    with torch.no_grad():
        assert result.model(ids).shape == (1, 2)

"""Reference architectures written here (torchvision and timm cannot be used on these machines).

Each is a plain ``nn.Module`` factory, nameable from the CLI as ``shrink.zoo:resnet18``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["resnet18", "resnet50", "mobilenet_v2", "convnext_tiny", "vgg11", "vit_small", "transformer", "DigitsNet"]


def _bn_conv(c_in, c_out, k, stride=1, groups=1):
    return nn.Sequential(nn.Conv2d(c_in, c_out, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(c_out))


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, c_in, c, stride=1):
        super().__init__()
        self.conv1, self.conv2 = _bn_conv(c_in, c, 3, stride), _bn_conv(c, c, 3)
        self.down = _bn_conv(c_in, c, 1, stride) if stride != 1 or c_in != c else nn.Identity()

    def forward(self, x):
        return F.relu(self.conv2(F.relu(self.conv1(x))) + self.down(x))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, c_in, c, stride=1):
        super().__init__()
        out = c * 4
        self.conv1, self.conv2, self.conv3 = _bn_conv(c_in, c, 1), _bn_conv(c, c, 3, stride), _bn_conv(c, out, 1)
        self.down = _bn_conv(c_in, out, 1, stride) if stride != 1 or c_in != out else nn.Identity()

    def forward(self, x):
        return F.relu(self.conv3(F.relu(self.conv2(F.relu(self.conv1(x))))) + self.down(x))


class ResNet(nn.Module):
    """ResNet as in He et al. 2016 (ImageNet stem), with BasicBlock or Bottleneck stages."""

    def __init__(self, block, layers, num_classes=1000, width=64):
        super().__init__()
        self.stem = nn.Sequential(_bn_conv(3, width, 7, 2), nn.ReLU(), nn.MaxPool2d(3, 2, 1))
        stages, c_in = [], width
        for i, n in enumerate(layers):
            c = width * 2**i
            blocks = []
            for j in range(n):
                blocks.append(block(c_in, c, 2 if j == 0 and i > 0 else 1))
                c_in = c * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.fc = nn.Linear(c_in, num_classes)

    def forward(self, x):
        return self.fc(self.stages(self.stem(x)).mean((2, 3)))


def resnet18(num_classes: int = 1000) -> ResNet:
    return ResNet(BasicBlock, [2, 2, 2, 2], num_classes)


def resnet50(num_classes: int = 1000) -> ResNet:
    return ResNet(Bottleneck, [3, 4, 6, 3], num_classes)


class InvertedResidual(nn.Module):
    def __init__(self, c_in, c_out, stride, expand):
        super().__init__()
        hidden = c_in * expand
        self.use_res = stride == 1 and c_in == c_out
        layers = [_bn_conv(c_in, hidden, 1), nn.ReLU6()] if expand != 1 else []
        layers += [_bn_conv(hidden, hidden, 3, stride, groups=hidden), nn.ReLU6(), _bn_conv(hidden, c_out, 1)]
        self.block = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.block(x) if self.use_res else self.block(x)


def mobilenet_v2(num_classes: int = 1000) -> nn.Module:
    """MobileNetV2 (Sandler et al. 2018): depthwise convs inside inverted residuals."""
    cfg = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]
    layers, c_in = [_bn_conv(3, 32, 3, 2), nn.ReLU6()], 32
    for t, c, n, s in cfg:
        for i in range(n):
            layers.append(InvertedResidual(c_in, c, s if i == 0 else 1, t))
            c_in = c
    layers += [_bn_conv(c_in, 1280, 1), nn.ReLU6()]
    return nn.Sequential(nn.Sequential(*layers), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(1280, num_classes))


def vgg11(num_classes: int = 1000) -> nn.Module:
    """VGG-11 with BatchNorm (Simonyan & Zisserman 2015), global-pooled to a small classifier."""
    layers, c_in = [], 3
    for v in [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"]:
        if v == "M":
            layers.append(nn.MaxPool2d(2))
        else:
            layers += [_bn_conv(c_in, v, 3), nn.ReLU()]
            c_in = v
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, 4096), nn.ReLU(),
                         nn.Linear(4096, num_classes))


class Attention(nn.Module):
    """Multi-head self-attention with a fused qkv projection (timm's layout)."""

    def __init__(self, dim, num_heads):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, _ = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(b, n, -1))


class Block(nn.Module):
    def __init__(self, dim, num_heads, mlp_ratio=4):
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim), Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.fc1, self.fc2 = nn.Linear(dim, dim * mlp_ratio), nn.Linear(dim * mlp_ratio, dim)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class ViT(nn.Module):
    """Vision Transformer (Dosovitskiy et al. 2021): patch conv, class token, pre-norm blocks."""

    def __init__(self, image=224, patch=16, dim=384, depth=12, heads=6, num_classes=1000):
        super().__init__()
        self.patch = nn.Conv2d(3, dim, patch, patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(torch.randn(1, (image // patch) ** 2 + 1, dim) * 0.02)
        self.blocks = nn.Sequential(*[Block(dim, heads) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x):
        x = self.patch(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos
        return self.head(self.norm(self.blocks(x))[:, 0])


def vit_small(num_classes: int = 1000) -> ViT:
    return ViT(num_classes=num_classes)


class Transformer(nn.Module):
    """A token transformer encoder (BERT-base shaped when depth=12, dim=768)."""

    def __init__(self, vocab=1000, dim=768, depth=24, heads=12, num_classes=2, max_len=512):
        super().__init__()
        self.tok = nn.Embedding(vocab, dim)
        self.pos = nn.Embedding(max_len, dim)
        self.blocks = nn.Sequential(*[Block(dim, heads) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, ids):
        x = self.tok(ids) + self.pos(torch.arange(ids.shape[1], device=ids.device))
        return self.head(self.norm(self.blocks(x)).mean(1))


def transformer(depth: int = 24, dim: int = 768, heads: int = 12) -> Transformer:
    return Transformer(dim=dim, depth=depth, heads=heads)


class DigitsNet(nn.Module):
    """The demo's small residual CNN for 8x8 handwritten digits."""

    def __init__(self, width: int = 32, num_classes: int = 10):
        super().__init__()
        self.stem = _bn_conv(1, width, 3)
        self.block1 = BasicBlock(width, width)
        self.block2 = BasicBlock(width, 2 * width, stride=2)
        self.fc = nn.Linear(2 * width, num_classes)

    def forward(self, x):
        x = self.block2(self.block1(F.relu(self.stem(x))))
        return self.fc(x.mean((2, 3)))


class ConvNeXtBlock(nn.Module):
    """7x7 depthwise conv, LayerNorm over channels, 4x pointwise MLP, layer scale (Liu et al. 2022)."""

    def __init__(self, dim):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim)
        self.pwconv1, self.pwconv2 = nn.Linear(dim, 4 * dim), nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), 1e-6))

    def forward(self, x):
        y = self.norm(self.dwconv(x).permute(0, 2, 3, 1))
        y = self.gamma * self.pwconv2(F.gelu(self.pwconv1(y)))
        return x + y.permute(0, 3, 1, 2)


class _LayerNorm2d(nn.LayerNorm):
    def forward(self, x):
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ConvNeXt(nn.Module):
    """ConvNeXt (Liu et al. 2022): patchify stem, four stages of ConvNeXtBlocks, LN + conv downsampling."""

    def __init__(self, depths=(3, 3, 9, 3), dims=(96, 192, 384, 768), num_classes=1000):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, dims[0], 4, 4), _LayerNorm2d(dims[0]))
        stages = []
        for i, (depth, dim) in enumerate(zip(depths, dims)):
            down = [] if i == 0 else [_LayerNorm2d(dims[i - 1]), nn.Conv2d(dims[i - 1], dim, 2, 2)]
            stages.append(nn.Sequential(*down, *[ConvNeXtBlock(dim) for _ in range(depth)]))
        self.stages = nn.Sequential(*stages)
        self.norm = nn.LayerNorm(dims[-1])
        self.head = nn.Linear(dims[-1], num_classes)

    def forward(self, x):
        return self.head(self.norm(self.stages(self.stem(x)).mean((2, 3))))


def convnext_tiny(num_classes: int = 1000) -> ConvNeXt:
    return ConvNeXt(num_classes=num_classes)

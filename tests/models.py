"""Fixture models, each named for the coupling it exercises."""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch import nn


class TinyMLP(nn.Module):
    def __init__(self, sizes=(2, 20, 18, 16, 14, 2)):
        super().__init__()
        layers = []
        for a, b in zip(sizes[:-1], sizes[1:]):
            layers += [nn.Linear(a, b), nn.ReLU()]
        self.net = nn.Sequential(*layers[:-1])

    def forward(self, x):
        return self.net(x)


class ConvBN(nn.Module):
    def __init__(self, c=16, classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, c, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, 2 * c, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(2 * c)
        self.fc = nn.Linear(2 * c * 4 * 4, classes)  # flatten: conv channels fan out to Linear columns

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)
        x = F.adaptive_avg_pool2d(F.relu(self.bn2(self.conv2(x))), 4)
        return self.fc(x.flatten(1))


class _Block(nn.Module):
    def __init__(self, c_in, c_out, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.down = None
        if stride != 1 or c_in != c_out:
            self.down = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x):
        y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(y + (x if self.down is None else self.down(x)))


class Residual(nn.Module):
    """ResNet-style: identity and projection shortcuts couple channels across blocks."""

    def __init__(self, c=8, classes=10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU())
        self.layer1 = nn.Sequential(_Block(c, c), _Block(c, c))
        self.layer2 = nn.Sequential(_Block(c, 2 * c, 2), _Block(2 * c, 2 * c))
        self.fc = nn.Linear(2 * c, classes)

    def forward(self, x):
        x = self.layer2(self.layer1(self.stem(x)))
        return self.fc(x.mean((2, 3)))


class Concat(nn.Module):
    """Two branches concatenated along channels, read by one conv."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Conv2d(3, 12, 1)
        self.bn = nn.BatchNorm2d(20)
        self.mix = nn.Conv2d(20, 16, 3, padding=1)
        self.head = nn.Linear(16, 5)

    def forward(self, x):
        x = F.relu(self.bn(torch.cat([self.a(x), self.b(x)], dim=1)))
        return self.head(F.relu(self.mix(x)).mean((2, 3)))


class DepthwiseSeparable(nn.Module):
    """MobileNet-style: a depthwise conv shares its channels with the conv before it."""

    def __init__(self):
        super().__init__()
        self.expand = nn.Conv2d(3, 24, 1, bias=False)
        self.bn0 = nn.BatchNorm2d(24)
        self.dw = nn.Conv2d(24, 24, 3, padding=1, groups=24, bias=False)
        self.bn1 = nn.BatchNorm2d(24)
        self.project = nn.Conv2d(24, 16, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(16)
        self.head = nn.Linear(16, 4)

    def forward(self, x):
        x = F.relu6(self.bn1(self.dw(F.relu6(self.bn0(self.expand(x))))))
        return self.head(self.bn2(self.project(x)).mean((2, 3)))


class GroupedConv(nn.Module):
    """A grouped conv: channels must leave each group evenly."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.grouped = nn.Conv2d(16, 32, 3, padding=1, groups=4)
        self.conv3 = nn.Conv2d(32, 8, 1)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        x = F.relu(self.grouped(F.relu(self.conv1(x))))
        return self.head(F.relu(self.conv3(x)).mean((2, 3)))


class Conv1x1Head(nn.Module):
    """A 1x1-conv classifier: its output channels are the model's classes and must stay."""

    def __init__(self, classes=10):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.classifier = nn.Conv2d(16, classes, 1)

    def forward(self, x):
        return self.classifier(self.features(x)).mean((2, 3))


class MultiOutput(nn.Module):
    """Returns a dict: logits and an embedding, both kept at full width."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(6, 32), nn.ReLU(), nn.Linear(32, 24), nn.ReLU())
        self.embed = nn.Linear(24, 8)
        self.cls = nn.Linear(24, 3)

    def forward(self, x):
        h = self.body(x)
        return {"logits": self.cls(h), "embedding": self.embed(h)}


class Attention(nn.Module):
    """Hand-written attention with a fused qkv projection (timm's layout), in a pre-norm block."""

    def __init__(self, dim=32, num_heads=4, classes=5):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.embed = nn.Linear(12, dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, x):
        x = self.embed(x)
        b, n, _ = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        a = F.scaled_dot_product_attention(q, k, v)
        x = x + self.proj(a.transpose(1, 2).reshape(b, n, -1))
        return self.head(x.mean(1))


class GroupedQueryAttention(nn.Module):
    """LLaMA-style grouped-query attention: 8 query heads share 2 key/value heads."""

    def __init__(self, dim=32, num_heads=8, num_kv_heads=2, classes=5):
        super().__init__()
        self.num_heads, self.num_key_value_heads = num_heads, num_kv_heads
        self.head_dim = 8
        self.num_key_value_groups = num_heads // num_kv_heads
        self.q_proj = nn.Linear(dim, num_heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(dim, num_kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(dim, num_kv_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(num_heads * self.head_dim, dim, bias=False)
        self.embed = nn.Linear(12, dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, x):
        x = self.embed(x)
        b, n, _ = x.shape
        q = self.q_proj(x).view(b, n, -1, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, n, -1, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, n, -1, self.head_dim).transpose(1, 2)
        k = k.repeat_interleave(self.num_key_value_groups, dim=1)
        v = v.repeat_interleave(self.num_key_value_groups, dim=1)
        a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, -1)
        return self.head((x + self.o_proj(a)).mean(1))


class MHATransformer(nn.Module):
    """nn.MultiheadAttention in a post-norm-free block: heads are tied to the residual width."""

    def __init__(self, dim=32, heads=4, classes=5):
        super().__init__()
        self.embed = nn.Linear(12, dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.fc1 = nn.Linear(dim, 64)
        self.fc2 = nn.Linear(64, dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, x):
        x = self.embed(x)
        x = x + self.attn(x, x, x, need_weights=False)[0]
        x = x + self.fc2(F.gelu(self.fc1(x)))
        return self.head(x.mean(1))


class InputResidual(nn.Module):
    """Adds the raw input to a layer's output: that width belongs to the input and cannot shrink."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(16, 32)
        self.fc2 = nn.Linear(32, 16)
        self.head = nn.Linear(16, 3)

    def forward(self, x):
        return self.head(x + self.fc2(F.relu(self.fc1(x))))


class MisTraced(nn.Module):
    """A channel flip between two convs: the tracer sees an element-wise op and maps channel c to c.

    Cutting conv1's channels and conv2's matching input columns then runs, keeps every shape,
    and computes something else. Only the masking check can tell.
    """

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(16)
        self.conv3 = nn.Conv2d(16, 16, 3, padding=1)
        self.fc = nn.Linear(16, 4)

    def forward(self, x):
        x = torch.relu(self.conv1(x)).flip(1)  # channel reversal the tracer does not model
        x = torch.relu(self.bn2(self.conv2(x)))
        x = torch.relu(self.conv3(x))
        return self.fc(x.mean((2, 3)))


IMAGE = (2, 3, 16, 16)
TOKENS = (2, 6, 12)

# name -> (factory, input shape); every one of these must satisfy the masking oracle.
ORACLE_MODELS = {
    "TinyMLP": (TinyMLP, (4, 2)),
    "ConvBN": (ConvBN, IMAGE),
    "Residual": (Residual, IMAGE),
    "Concat": (Concat, IMAGE),
    "DepthwiseSeparable": (DepthwiseSeparable, IMAGE),
    "GroupedConv": (GroupedConv, IMAGE),
    "Conv1x1Head": (Conv1x1Head, IMAGE),
    "Attention": (Attention, TOKENS),
    "GroupedQueryAttention": (GroupedQueryAttention, TOKENS),
    "MHATransformer": (MHATransformer, TOKENS),
    "InputResidual": (InputResidual, (4, 16)),
}


def randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give BatchNorm non-trivial statistics so that dropping a channel's BN would show."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return model.eval()


class SlowTrace(nn.Module):
    """Quick on compress's first forward, then 1 s per forward: tracing outlasts a short time budget."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 8)
        self.head = nn.Linear(8, 2)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        if self.calls > 1:
            time.sleep(1.0)
        return self.head(self.fc(x))

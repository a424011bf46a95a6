"""Group expansion that visits each channel position once (shrink/cut/grouping.py).

The groups must be exactly torch-pruning's, and a model whose slices fork and join on every block
(ReXNet's partial residual, copied below from timm/models/rexnet.py) must trace at all: torch-pruning
re-walks every path there, and its walk grows exponentially with depth.
"""

from __future__ import annotations

import pytest
import torch
import torch_pruning as tp
from torch import nn

import shrink
from models import ORACLE_MODELS
from real_models import PATTERNS
from shrink.cut import grouping


class ConvNormAct(nn.Sequential):
    def __init__(self, c_in, c_out, kernel_size=1, stride=1, groups=1, apply_act=True):
        super().__init__(nn.Conv2d(c_in, c_out, kernel_size, stride, kernel_size // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(c_out), *([nn.SiLU()] if apply_act else []))


class LinearBottleneck(nn.Module):
    """timm's ReXNet block: the output is wider than the input, and the shortcut adds into its first channels."""

    def __init__(self, in_chs, out_chs, stride, exp_ratio=1.0):
        super().__init__()
        self.use_shortcut = stride == 1 and in_chs <= out_chs
        self.in_channels = in_chs
        self.out_channels = out_chs
        if exp_ratio != 1.0:
            dw_chs = round(in_chs * exp_ratio)
            self.conv_exp = ConvNormAct(in_chs, dw_chs)
        else:
            dw_chs = in_chs
            self.conv_exp = None
        self.conv_dw = ConvNormAct(dw_chs, dw_chs, kernel_size=3, stride=stride, groups=dw_chs, apply_act=False)
        self.act_dw = nn.ReLU6()
        self.conv_pwl = ConvNormAct(dw_chs, out_chs, 1, apply_act=False)

    def forward(self, x):
        shortcut = x
        if self.conv_exp is not None:
            x = self.conv_exp(x)
        x = self.conv_dw(x)
        x = self.act_dw(x)
        x = self.conv_pwl(x)
        if self.use_shortcut:
            x = torch.cat([x[:, 0:self.in_channels] + shortcut, x[:, self.in_channels:]], dim=1)
        return x


class ReXNet(nn.Module):
    def __init__(self, depth: int = 14, num_classes: int = 10):
        super().__init__()
        self.stem = ConvNormAct(3, 16, 3, 2)
        blocks, chs = [], 16
        for i in range(depth):
            blocks.append(LinearBottleneck(chs, chs + 4, 2 if i in (1, 3) else 1, 1.0 if i == 0 else 3.0))
            chs += 4
        self.features = nn.Sequential(*blocks)
        self.head = nn.Linear(chs, num_classes)

    def forward(self, x):
        return self.head(self.features(self.stem(x)).mean((2, 3)))


def _groups(graph_type, model, x) -> dict:
    """Each group as {root: {(layer, pruning function, indices)}}, over named layers."""
    dg = graph_type().build_dependency(model, example_inputs=x)
    names = {m: n for n, m in model.named_modules()} | {p: n for n, p in model.named_parameters()}
    out = {}
    for group in dg.get_all_groups(root_module_types=(nn.Conv2d, nn.Linear)):
        items = set()
        for item in group:
            target = item.dep.target.module
            if target in names:
                # As sets: torch-pruning repeats an index reached twice through a GQA mapping. Where
                # several root channels reach one index (a flatten read back), which root it keeps is
                # arbitrary (set order), so only the indices are compared.
                assert len(item.root_idxs) == len(item.idxs)
                items.add((names[target], item.dep.handler.__name__, tuple(sorted(set(item.idxs)))))
        out[names[group[0].dep.target.module]] = frozenset(items)
    return out


CASES = {**{n: (f, lambda s=s: torch.randn(*s)) for n, (f, s) in ORACLE_MODELS.items()},
         "ShuffleNetV2": PATTERNS[1], "TimmViT": PATTERNS[3], "PointNet": PATTERNS[8],
         "ReXNet-6": (lambda: ReXNet(6), lambda: torch.randn(1, 3, 32, 32))}


@pytest.mark.parametrize("name", sorted(CASES))
def test_groups_are_torch_prunings(name):
    factory, make_x = CASES[name]
    torch.manual_seed(0)
    model, x = factory().eval(), make_x()
    if not isinstance(x, torch.Tensor) or x.dtype != torch.float32:
        pytest.skip("torch-pruning's own tracer takes float tensors only")
    ours, theirs = _groups(grouping.Graph, model, x), _groups(tp.DependencyGraph, model, x)
    assert ours == theirs
    assert ours, "the comparison saw no group"


def test_rexnet_traces_and_compresses():
    # 14 blocks: torch-pruning's own walk does not finish here in minutes (10 blocks: over two).
    torch.manual_seed(0)
    model, x = ReXNet(14).eval(), torch.randn(2, 3, 32, 32)
    result = shrink.compress(model, x, trace_timeout=60)
    assert result.plan.checks["black_boxes"] == {}
    assert result.model(x).shape == model(x).shape
    assert result.params_ratio >= 1.5  # a third of the parameters or more removed


def test_walk_stops_when_channels_meet_positions(monkeypatch):
    """A group reaching more positions than the limit stops with the layer it was walking."""
    monkeypatch.setattr(grouping, "MAX_POSITIONS", 50)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Flatten(), nn.Linear(8 * 16 * 16, 4))
    dg = grouping.Graph().build_dependency(model, example_inputs=torch.randn(1, 3, 16, 16))
    with pytest.raises(grouping.GroupTooLarge, match="'0'"):
        dg.get_pruning_group(model[0], tp.prune_conv_out_channels, list(range(8)))


class ConvAttention(nn.Module):
    """timm's Visformer attention: heads computed on a conv map, reshaped back to it."""

    def __init__(self, dim: int, num_heads: int = 2):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.qkv = nn.Conv2d(dim, self.head_dim * num_heads * 3, 1, bias=False)
        self.proj = nn.Conv2d(self.head_dim * num_heads, dim, 1, bias=False)

    def forward(self, x):
        B, C, H, W = x.shape
        x = self.qkv(x).reshape(B, 3, self.num_heads, self.head_dim, -1).permute(1, 0, 2, 4, 3)
        q, k, v = x.unbind(0)
        attn = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
        x = (attn @ v).permute(0, 1, 3, 2).reshape(B, -1, H, W)
        return self.proj(x)


class VisformerBlock(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.norm1, self.attn = nn.BatchNorm2d(dim), ConvAttention(dim)
        self.norm2 = nn.BatchNorm2d(dim)
        self.mlp = nn.Sequential(nn.Conv2d(dim, 4 * dim, 1), nn.GELU(), nn.Conv2d(4 * dim, dim, 1))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class Visformer(nn.Module):
    def __init__(self, dim: int = 16, depth: int = 2):
        super().__init__()
        self.stem = nn.Conv2d(3, dim, 4, 4)
        self.blocks = nn.Sequential(*[VisformerBlock(dim) for _ in range(depth)])
        self.head = nn.Linear(dim, 10)

    def forward(self, x):
        return self.head(self.blocks(self.stem(x)).mean((2, 3)))


def test_oversized_walks_box_their_attention_in_one_pass(monkeypatch):
    """Channels spread over positions in every attention block: each block is a black box (one pass
    finds them all), named in the plan, and the MLPs are still cut."""
    monkeypatch.setattr(grouping, "MAX_POSITIONS", 3000)  # the positions of one 16 x 8 x 8 map: 1024
    passes = []
    real = grouping.Graph.get_all_groups

    def counting(self, *args, **kwargs):
        passes.append(1)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(grouping.Graph, "get_all_groups", counting)
    torch.manual_seed(0)
    model, x = Visformer().eval(), torch.randn(2, 3, 32, 32)
    result = shrink.compress(model, x)
    boxes = result.plan.checks["black_boxes"]
    assert sorted(boxes) == ["blocks.0.attn", "blocks.1.attn"]
    assert all("positions" in why for why in boxes.values())
    assert len(passes) == 2  # one pass finds both, one traces around them
    assert result.model(x).shape == model(x).shape
    mlp = [result.model.blocks[i].mlp[0].out_channels for i in range(2)]
    assert mlp == [32, 32]  # the MLPs' hidden convs lose half their channels


def test_division_by_zero_raises_as_in_torch_pruning():
    """torch-pruning's mappings raise on a zero divisor, which makes the block a black box (GCViT);
    the array walk must not divide by zero silently and walk on with garbage indices."""
    from torch_pruning.dependency import index_mapping

    pos = torch.arange(8).repeat(2, 1).T.numpy()
    for mapping in (index_mapping._GQAIndexMapping(repeat=0, head_dim=4, reverse=True),
                    index_mapping._FlattenIndexMapping(stride=0, reverse=True),
                    index_mapping._SliceIndexMapping(dim=1, start=0, step=0, end=8, reverse=False)):
        with pytest.raises(ZeroDivisionError):
            grouping._mapped(mapping, pos)


class _ResidualMLP(nn.Module):
    def __init__(self, width: int, depth: int):
        super().__init__()
        self.stem = nn.Linear(8, width)  # the residual stream starts here, not at the model input
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(width), nn.Linear(width, 2 * width), nn.GELU(), nn.Linear(2 * width, width))
            for _ in range(depth))
        self.head = nn.Linear(width, 3)

    def forward(self, x):
        x = self.stem(x)
        for block in self.blocks:
            x = x + block(x)
        return self.head(x)


def test_a_deep_residual_width_is_not_growth(monkeypatch):
    """A residual stream reached at every layer of a deep model (an 8B LLaMA's: 4,096 positions at
    some 600 nodes) walks on: only positions beyond the root's width at each node count."""
    monkeypatch.setattr(grouping, "MAX_POSITIONS", 200)  # the residual group reaches 16 x ~60 nodes
    torch.manual_seed(0)
    model, x = _ResidualMLP(16, 12).eval(), torch.randn(4, 8)
    dg = grouping.Graph().build_dependency(model, example_inputs=x)
    group = dg.get_pruning_group(model.blocks[0][3], tp.prune_linear_out_channels, list(range(16)))
    assert sum(1 for item in group if isinstance(item.dep.target.module, nn.Linear)) >= 24
    result = shrink.compress(model, x)
    assert result.plan.checks["black_boxes"] == {}
    assert result.model.head.in_features < 16  # the residual width itself was cut


def test_a_walk_of_too_many_steps_stops(monkeypatch):
    """A walk that reaches its positions a few at a time (GPT-OSS's expert routing: one per step, half
    a million steps) stops after MAX_STEPS like an oversized one, and its layer becomes a black box."""
    torch.manual_seed(0)
    model, x = _ResidualMLP(16, 12).eval(), torch.randn(4, 8)
    dg = grouping.Graph().build_dependency(model, example_inputs=x)
    monkeypatch.setattr(grouping, "MAX_STEPS", 10)  # the residual group takes some 60 steps
    with pytest.raises(grouping.GroupTooLarge, match="steps"):
        dg.get_pruning_group(model.blocks[0][3], tp.prune_linear_out_channels, list(range(16)))
    monkeypatch.setattr(grouping, "MAX_STEPS", 1_000)
    assert len(dg.get_pruning_group(model.blocks[0][3], tp.prune_linear_out_channels, list(range(16)))) > 24

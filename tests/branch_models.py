"""Fixture models whose branches split and meet again, written the way timm writes them.

SKNet's selective kernel (paths and split attention), Twins-SVT's attention with separate q and kv,
and CSPNet's cross stage (a split part with two consumers). Used through `gated_models.GATED`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


# SKNet, timm/layers/selective_kernel.py (SelectiveKernelAttn, SelectiveKernel with split_input) and
# timm/models/sknet.py (SelectiveKernelBasic), in a two-stage ResNet as skresnet18 builds it.
class ConvNormAct(nn.Module):
    def __init__(self, in_channels, out_channels, kernel_size=3, stride=1, dilation=1, apply_act=True):
        super().__init__()
        padding = ((stride - 1) + dilation * (kernel_size - 1)) // 2
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, dilation, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.act = nn.ReLU() if apply_act else nn.Identity()

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))


class SelectiveKernelAttn(nn.Module):
    def __init__(self, channels: int, num_paths: int = 2, attn_channels: int = 32):
        super().__init__()
        self.num_paths = num_paths
        self.fc_reduce = nn.Conv2d(channels, attn_channels, kernel_size=1, bias=False)
        self.bn = nn.BatchNorm2d(attn_channels)
        self.act = nn.ReLU()
        self.fc_select = nn.Conv2d(attn_channels, channels * num_paths, kernel_size=1, bias=False)

    def forward(self, x):
        x = x.sum(1).mean((2, 3), keepdim=True)
        x = self.fc_reduce(x)
        x = self.bn(x)
        x = self.act(x)
        x = self.fc_select(x)
        B, C, H, W = x.shape
        x = x.view(B, self.num_paths, C // self.num_paths, H, W)
        return torch.softmax(x, dim=1)


class SelectiveKernel(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, split_input: bool = True,
                 attn_channels: int = 8):
        super().__init__()
        kernel_size, dilation = [3, 3], [1, 2]  # keep_3x3: [3, 5] -> 3x3 dilated
        self.num_paths = len(kernel_size)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.split_input = split_input
        if self.split_input:
            in_channels = in_channels // self.num_paths
        self.paths = nn.ModuleList([ConvNormAct(in_channels, out_channels, k, stride, d)
                                    for k, d in zip(kernel_size, dilation)])
        self.attn = SelectiveKernelAttn(out_channels, self.num_paths, attn_channels)

    def forward(self, x):
        if self.split_input:
            x_split = torch.split(x, self.in_channels // self.num_paths, 1)
            x_paths = [op(x_split[i]) for i, op in enumerate(self.paths)]
        else:
            x_paths = [op(x) for op in self.paths]
        x = torch.stack(x_paths, dim=1)
        x_attn = self.attn(x)
        x = x * x_attn
        return torch.sum(x, dim=1)


class SelectiveKernelBasic(nn.Module):
    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample=None):
        super().__init__()
        self.conv1 = SelectiveKernel(inplanes, planes, stride=stride)
        self.conv2 = ConvNormAct(planes, planes, kernel_size=3, apply_act=False)
        self.act = nn.ReLU()
        self.downsample = downsample

    def forward(self, x):
        shortcut = x
        x = self.conv1(x)
        x = self.conv2(x)
        if self.downsample is not None:
            shortcut = self.downsample(shortcut)
        x += shortcut
        return self.act(x)


class SKResNet(nn.Module):
    def __init__(self, widths=(16, 32), num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.act1 = nn.ReLU()
        down = nn.Sequential(nn.Conv2d(widths[0], widths[1], 1, 2, bias=False), nn.BatchNorm2d(widths[1]))
        self.layer1 = nn.Sequential(SelectiveKernelBasic(widths[0], widths[0]),
                                    SelectiveKernelBasic(widths[0], widths[0]))
        self.layer2 = nn.Sequential(SelectiveKernelBasic(widths[0], widths[1], 2, down),
                                    SelectiveKernelBasic(widths[1], widths[1]))
        self.fc = nn.Linear(widths[1], num_classes)

    def forward(self, x):
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.layer2(self.layer1(x))
        return self.fc(x.mean((2, 3)))


# Twins-SVT, timm/models/twins.py: LocallyGroupedAttn (fused qkv, windows), GlobalSubSampleAttn (q, fused
# kv, strided `sr` conv), PosConv (PEG) after each stage's first block, patch embeddings between stages.
class LocallyGroupedAttn(nn.Module):
    def __init__(self, dim: int, num_heads: int, ws: int):
        super().__init__()
        self.dim = dim
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)
        self.ws = ws

    def forward(self, x, size):
        B, N, C = x.shape
        H, W = size
        x = x.view(B, H, W, C)
        pad_r = (self.ws - W % self.ws) % self.ws
        pad_b = (self.ws - H % self.ws) % self.ws
        x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
        _, Hp, Wp, _ = x.shape
        _h, _w = Hp // self.ws, Wp // self.ws
        x = x.reshape(B, _h, self.ws, _w, self.ws, C).transpose(2, 3)
        qkv = self.qkv(x).reshape(
            B, _h * _w, self.ws * self.ws, 3, self.num_heads, C // self.num_heads).permute(3, 0, 1, 4, 2, 5)
        q, k, v = qkv.unbind(0)
        x = F.scaled_dot_product_attention(q, k, v)
        x = x.transpose(2, 3).reshape(B, _h, _w, self.ws, self.ws, C)
        x = x.transpose(2, 3).reshape(B, _h * self.ws, _w * self.ws, C)
        if pad_r > 0 or pad_b > 0:
            x = x[:, :H, :W, :].contiguous()
        x = x.reshape(B, N, C)
        return self.proj(x)


class GlobalSubSampleAttn(nn.Module):
    def __init__(self, dim: int, num_heads: int, sr_ratio: int = 1):
        super().__init__()
        self.dim = dim
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim, bias=True)
        self.kv = nn.Linear(dim, dim * 2, bias=True)
        self.proj = nn.Linear(dim, dim)
        self.sr_ratio = sr_ratio
        if sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, kernel_size=sr_ratio, stride=sr_ratio)
            self.norm = nn.LayerNorm(dim)
        else:
            self.sr = None
            self.norm = None

    def forward(self, x, size):
        B, N, C = x.shape
        q = self.q(x).reshape(B, N, self.num_heads, C // self.num_heads).permute(0, 2, 1, 3)
        if self.sr is not None:
            x = x.permute(0, 2, 1).reshape(B, C, *size)
            x = self.sr(x).reshape(B, C, -1).permute(0, 2, 1)
            x = self.norm(x)
        kv = self.kv(x).reshape(B, -1, 2, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        k, v = kv.unbind(0)
        x = F.scaled_dot_product_attention(q, k, v)
        x = x.transpose(1, 2).reshape(B, N, C)
        return self.proj(x)


class TwinsMlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class TwinsBlock(nn.Module):
    def __init__(self, dim: int, num_heads: int, sr_ratio: int = 1, ws=None, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = GlobalSubSampleAttn(dim, num_heads, sr_ratio) if ws is None else \
            LocallyGroupedAttn(dim, num_heads, ws)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = TwinsMlp(dim, int(dim * mlp_ratio))

    def forward(self, x, size):
        x = x + self.attn(self.norm1(x), size)
        return x + self.mlp(self.norm2(x))


class PosConv(nn.Module):
    def __init__(self, in_chans: int, embed_dim: int):
        super().__init__()
        self.proj = nn.Sequential(nn.Conv2d(in_chans, embed_dim, 3, 1, 1, bias=True, groups=embed_dim))

    def forward(self, x, size):
        B, N, C = x.shape
        cnn_feat_token = x.transpose(1, 2).view(B, C, *size)
        x = self.proj(cnn_feat_token)
        x += cnn_feat_token
        return x.flatten(2).transpose(1, 2)


class TwinsPatchEmbed(nn.Module):
    def __init__(self, patch_size: int, in_chans: int, embed_dim: int):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, patch_size, patch_size)
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, x):
        x = self.proj(x)
        size = x.shape[2:]
        return self.norm(x.flatten(2).transpose(1, 2)), size


class Twins(nn.Module):
    """timm's Twins-SVT (twins_svt_small: LSA/GSA alternating, sr_ratios 8, 4, 2, 1), two tiny stages."""

    def __init__(self, dims=(16, 32), heads=(2, 4), sr_ratios=(2, 1), ws=2, num_classes: int = 10):
        super().__init__()
        self.patch_embeds = nn.ModuleList([TwinsPatchEmbed(4, 3, dims[0]), TwinsPatchEmbed(2, dims[0], dims[1])])
        self.blocks = nn.ModuleList([
            nn.ModuleList([TwinsBlock(d, h, sr, ws=ws), TwinsBlock(d, h, sr)]) for d, h, sr in zip(dims, heads, sr_ratios)])
        self.pos_block = nn.ModuleList([PosConv(d, d) for d in dims])
        self.norm = nn.LayerNorm(dims[-1])
        self.head = nn.Linear(dims[-1], num_classes)

    def forward(self, x):
        B = x.shape[0]
        for i, (embed, blocks, pos_blk) in enumerate(zip(self.patch_embeds, self.blocks, self.pos_block)):
            x, size = embed(x)
            for j, blk in enumerate(blocks):
                x = blk(x, size)
                if j == 0:
                    x = pos_blk(x, size)
            if i < len(self.blocks) - 1:
                x = x.reshape(B, *size, -1).permute(0, 3, 1, 2).contiguous()
        x = self.norm(x)
        return self.head(x.mean(dim=1))


# CSPNet, timm/models/cspnet.py (CrossStage3 as cs3darknet builds it): the expanded width is split in two
# with a stored size; one half feeds the blocks (a conv and a residual add: two consumers), the other
# goes straight into the concatenation.
class BottleneckBlock(nn.Module):
    def __init__(self, chs: int, mid: int):
        super().__init__()
        self.conv1 = ConvNormAct(chs, mid, kernel_size=1)
        self.conv2 = ConvNormAct(mid, chs, kernel_size=3, apply_act=False)
        self.act3 = nn.ReLU()

    def forward(self, x):
        shortcut = x
        x = self.conv2(self.conv1(x))
        return self.act3(x + shortcut)


class CrossStage3(nn.Module):
    def __init__(self, in_chs: int, out_chs: int, depth: int = 1):
        super().__init__()
        exp_chs = out_chs
        self.expand_chs = exp_chs
        self.conv_down = ConvNormAct(in_chs, out_chs, kernel_size=3, stride=2)
        self.conv_exp = ConvNormAct(out_chs, exp_chs, kernel_size=1)
        self.blocks = nn.Sequential(*[BottleneckBlock(exp_chs // 2, exp_chs // 4) for _ in range(depth)])
        self.conv_transition = ConvNormAct(exp_chs, out_chs, kernel_size=1)

    def forward(self, x):
        x = self.conv_down(x)
        x = self.conv_exp(x)
        x1, x2 = x.split(self.expand_chs // 2, dim=1)
        x1 = self.blocks(x1)
        return self.conv_transition(torch.cat([x1, x2], dim=1))


class CSPDarkNet(nn.Module):
    def __init__(self, widths=(16, 32), num_classes: int = 10):
        super().__init__()
        self.stem = ConvNormAct(3, 8, kernel_size=3)
        self.stages = nn.Sequential(CrossStage3(8, widths[0]), CrossStage3(widths[0], widths[1]))
        self.fc = nn.Linear(widths[1], num_classes)

    def forward(self, x):
        return self.fc(self.stages(self.stem(x)).mean((2, 3)))

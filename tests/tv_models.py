"""Fixture models for patterns of torchvision's own models that shrink once failed on (the torchvision sweep).

Each class follows the named torchvision source's forward at toy sizes, so the tests stay fast;
tests never import torchvision itself.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


# RAFT: torchvision/models/optical_flow/raft.py (CorrBlock, RAFT.forward) and _utils.py (grid_sample, make_coords_grid).
# The correlation lookup concatenates reshaped grid_sample outputs on dim -1, called from the model's own forward.
def grid_sample(img, absolute_grid, mode="bilinear", align_corners=None):
    h, w = img.shape[-2:]
    xgrid, ygrid = absolute_grid.split([1, 1], dim=-1)
    xgrid = 2 * xgrid / (w - 1) - 1
    if h > 1:
        ygrid = 2 * ygrid / (h - 1) - 1
    normalized_grid = torch.cat([xgrid, ygrid], dim=-1)
    return F.grid_sample(img, normalized_grid, mode=mode, align_corners=align_corners)


def make_coords_grid(batch_size, h, w):
    coords = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    coords = torch.stack(coords[::-1], dim=0).float()
    return coords[None].repeat(batch_size, 1, 1, 1)


class CorrBlock(nn.Module):
    def __init__(self, *, num_levels=2, radius=1):
        super().__init__()
        self.num_levels, self.radius = num_levels, radius
        self.corr_pyramid = [torch.tensor(0)]
        self.out_channels = num_levels * (2 * radius + 1) ** 2

    def build_pyramid(self, fmap1, fmap2):
        batch_size, num_channels, h, w = fmap1.shape
        corr = torch.matmul(fmap1.view(batch_size, num_channels, h * w).transpose(1, 2),
                            fmap2.view(batch_size, num_channels, h * w))
        corr_volume = (corr.view(batch_size, h, w, 1, h, w) / torch.sqrt(torch.tensor(num_channels)))
        corr_volume = corr_volume.reshape(batch_size * h * w, 1, h, w)
        self.corr_pyramid = [corr_volume]
        for _ in range(self.num_levels - 1):
            corr_volume = F.avg_pool2d(corr_volume, kernel_size=2, stride=2)
            self.corr_pyramid.append(corr_volume)

    def index_pyramid(self, centroids_coords):
        side = 2 * self.radius + 1
        di = torch.linspace(-self.radius, self.radius, side)
        delta = torch.stack(torch.meshgrid(di, di, indexing="ij"), dim=-1).view(1, side, side, 2)
        batch_size, _, h, w = centroids_coords.shape
        centroids_coords = centroids_coords.permute(0, 2, 3, 1).reshape(batch_size * h * w, 1, 1, 2)
        indexed_pyramid = []
        for corr_volume in self.corr_pyramid:
            sampling_coords = centroids_coords + delta
            indexed_pyramid.append(grid_sample(corr_volume, sampling_coords, align_corners=True).view(batch_size, h, w, -1))
            centroids_coords = centroids_coords / 2
        return torch.cat(indexed_pyramid, dim=-1).permute(0, 3, 1, 2).contiguous()


class RaftLookup(nn.Module):
    """RAFT, reduced: a shared feature encoder on both images, the correlation lookup, a motion encoder and flow head."""

    def __init__(self):
        super().__init__()
        self.feature_encoder = nn.Sequential(nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.ReLU(),
                                             nn.Conv2d(16, 16, 3, stride=2, padding=1))
        self.corr_block = CorrBlock()
        self.convc1 = nn.Conv2d(self.corr_block.out_channels, 16, 1)
        self.convf1 = nn.Conv2d(2, 8, 3, padding=1)
        self.conv = nn.Conv2d(24, 14, 3, padding=1)
        self.flow_head = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 2, 3, padding=1))

    def forward(self, image1, image2):
        fmaps = self.feature_encoder(torch.cat([image1, image2], dim=0))
        fmap1, fmap2 = torch.chunk(fmaps, chunks=2, dim=0)
        self.corr_block.build_pyramid(fmap1, fmap2)
        batch_size, _, h, w = fmap1.shape
        coords0 = make_coords_grid(batch_size, h, w)
        coords1 = make_coords_grid(batch_size, h, w) + fmap1[:, :2].tanh()  # a flow estimate, as after an update
        corr_features = self.corr_block.index_pyramid(centroids_coords=coords1)
        flow = coords1 - coords0
        corr = F.relu(self.convc1(corr_features))
        flow_features = F.relu(self.convf1(flow))
        motion = F.relu(self.conv(torch.cat([corr, flow_features], dim=1)))
        return self.flow_head(torch.cat([motion, flow], dim=1))


# Swin: torchvision/models/swin_transformer.py (shifted_window_attention, ShiftedWindowAttention, PatchMerging,
# SwinTransformerBlock). Channels-last maps [B, H, W, C]; the attention block passes its layers' weights to
# F.linear instead of calling them; patches are merged by strided slices of H and W, concatenated on C.
def _patch_merging_pad(x):
    H, W, _ = x.shape[-3:]
    x = F.pad(x, (0, 0, 0, W % 2, 0, H % 2))
    x0 = x[..., 0::2, 0::2, :]
    x1 = x[..., 1::2, 0::2, :]
    x2 = x[..., 0::2, 1::2, :]
    x3 = x[..., 1::2, 1::2, :]
    return torch.cat([x0, x1, x2, x3], -1)


class PatchMerging(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.dim = dim
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(4 * dim)

    def forward(self, x):
        return self.reduction(self.norm(_patch_merging_pad(x)))


def shifted_window_attention(input, qkv_weight, proj_weight, relative_position_bias, window_size, num_heads,
                             shift_size, qkv_bias=None, proj_bias=None, logit_scale=None):
    B, H, W, C = input.shape
    pad_r = (window_size[1] - W % window_size[1]) % window_size[1]
    pad_b = (window_size[0] - H % window_size[0]) % window_size[0]
    x = F.pad(input, (0, 0, 0, pad_r, 0, pad_b))
    _, pad_H, pad_W, _ = x.shape
    shift_size = shift_size.copy()
    if window_size[0] >= pad_H:
        shift_size[0] = 0
    if window_size[1] >= pad_W:
        shift_size[1] = 0
    if sum(shift_size) > 0:
        x = torch.roll(x, shifts=(-shift_size[0], -shift_size[1]), dims=(1, 2))
    num_windows = (pad_H // window_size[0]) * (pad_W // window_size[1])
    x = x.view(B, pad_H // window_size[0], window_size[0], pad_W // window_size[1], window_size[1], C)
    x = x.permute(0, 1, 3, 2, 4, 5).reshape(B * num_windows, window_size[0] * window_size[1], C)
    if logit_scale is not None and qkv_bias is not None:
        qkv_bias = qkv_bias.clone()
        length = qkv_bias.numel() // 3
        qkv_bias[length: 2 * length].zero_()
    qkv = F.linear(x, qkv_weight, qkv_bias)
    qkv = qkv.reshape(x.size(0), x.size(1), 3, num_heads, C // num_heads).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    if logit_scale is not None:  # Swin V2's cosine attention
        attn = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1)
        attn = attn * torch.clamp(logit_scale, max=math.log(100.0)).exp()
    else:
        q = q * (C // num_heads) ** -0.5
        attn = q.matmul(k.transpose(-2, -1))
    attn = attn + relative_position_bias
    if sum(shift_size) > 0:
        attn_mask = x.new_zeros((pad_H, pad_W))
        h_slices = ((0, -window_size[0]), (-window_size[0], -shift_size[0]), (-shift_size[0], None))
        w_slices = ((0, -window_size[1]), (-window_size[1], -shift_size[1]), (-shift_size[1], None))
        count = 0
        for h in h_slices:
            for w in w_slices:
                attn_mask[h[0]: h[1], w[0]: w[1]] = count
                count += 1
        attn_mask = attn_mask.view(pad_H // window_size[0], window_size[0], pad_W // window_size[1], window_size[1])
        attn_mask = attn_mask.permute(0, 2, 1, 3).reshape(num_windows, window_size[0] * window_size[1])
        attn_mask = attn_mask.unsqueeze(1) - attn_mask.unsqueeze(2)
        attn_mask = attn_mask.masked_fill(attn_mask != 0, float(-100.0)).masked_fill(attn_mask == 0, float(0.0))
        attn = attn.view(x.size(0) // num_windows, num_windows, num_heads, x.size(1), x.size(1))
        attn = attn + attn_mask.unsqueeze(1).unsqueeze(0)
        attn = attn.view(-1, num_heads, x.size(1), x.size(1))
    attn = F.softmax(attn, dim=-1)
    x = attn.matmul(v).transpose(1, 2).reshape(x.size(0), x.size(1), C)
    x = F.linear(x, proj_weight, proj_bias)
    x = x.view(B, pad_H // window_size[0], pad_W // window_size[1], window_size[0], window_size[1], C)
    x = x.permute(0, 1, 3, 2, 4, 5).reshape(B, pad_H, pad_W, C)
    if sum(shift_size) > 0:
        x = torch.roll(x, shifts=(shift_size[0], shift_size[1]), dims=(1, 2))
    return x[:, :H, :W, :].contiguous()


class ShiftedWindowAttention(nn.Module):
    def __init__(self, dim, window_size, shift_size, num_heads, cosine=False):
        super().__init__()
        self.window_size, self.shift_size, self.num_heads = window_size, shift_size, num_heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        self.relative_position_bias_table = nn.Parameter(
            0.02 * torch.randn((2 * window_size[0] - 1) * (2 * window_size[1] - 1), num_heads))
        coords = torch.stack(torch.meshgrid(torch.arange(window_size[0]), torch.arange(window_size[1]), indexing="ij"))
        coords_flatten = torch.flatten(coords, 1)
        relative_coords = (coords_flatten[:, :, None] - coords_flatten[:, None, :]).permute(1, 2, 0).contiguous()
        relative_coords[:, :, 0] += window_size[0] - 1
        relative_coords[:, :, 1] += window_size[1] - 1
        relative_coords[:, :, 0] *= 2 * window_size[1] - 1
        self.register_buffer("relative_position_index", relative_coords.sum(-1).flatten())
        self.logit_scale = nn.Parameter(torch.log(10 * torch.ones((num_heads, 1, 1)))) if cosine else None

    def forward(self, x):
        N = self.window_size[0] * self.window_size[1]
        bias = self.relative_position_bias_table[self.relative_position_index].view(N, N, -1)
        bias = bias.permute(2, 0, 1).contiguous().unsqueeze(0)
        return shifted_window_attention(x, self.qkv.weight, self.proj.weight, bias, self.window_size, self.num_heads,
                                        shift_size=self.shift_size, qkv_bias=self.qkv.bias, proj_bias=self.proj.bias,
                                        logit_scale=self.logit_scale)


class SwinTransformerBlock(nn.Module):
    def __init__(self, dim, num_heads, window_size, shift_size, cosine=False):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = ShiftedWindowAttention(dim, window_size, shift_size, num_heads, cosine)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))  # torchvision's MLP

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class Permute(nn.Module):
    def __init__(self, dims):
        super().__init__()
        self.dims = dims

    def forward(self, x):
        return torch.permute(x, self.dims)


class TorchvisionSwin(nn.Module):
    """torchvision's SwinTransformer, reduced: patch embedding, two stages of (plain, shifted) blocks, patch merging."""

    def __init__(self, dim=16, window=4, num_classes=10, cosine=False):
        super().__init__()
        w, s = [window, window], [window // 2, window // 2]
        self.features = nn.Sequential(
            nn.Sequential(nn.Conv2d(3, dim, 4, stride=4), Permute([0, 2, 3, 1]), nn.LayerNorm(dim)),
            nn.Sequential(SwinTransformerBlock(dim, 2, w, [0, 0], cosine), SwinTransformerBlock(dim, 2, w, s, cosine)),
            PatchMerging(dim),
            nn.Sequential(SwinTransformerBlock(2 * dim, 4, w, [0, 0], cosine)),
        )
        self.norm = nn.LayerNorm(2 * dim)
        self.permute = Permute([0, 3, 1, 2])
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(2 * dim, num_classes)

    def forward(self, x):
        x = self.permute(self.norm(self.features(x)))
        return self.head(torch.flatten(self.avgpool(x), 1))


# MaxViT: torchvision/models/maxvit.py (RelativePositionalMultiHeadAttention, WindowPartition, PartitionAttentionLayer).
# Fused ``to_qkv`` chunked in three, heads reshaped with the stored ``head_dim`` and merged back to the *input*
# width D, ``merge`` projection, k scaled by a stored ``scale_factor`` of the input width.
class RelativePositionalMultiHeadAttention(nn.Module):
    def __init__(self, feat_dim, head_dim, max_seq_len):
        super().__init__()
        self.n_heads = feat_dim // head_dim
        self.head_dim = head_dim
        self.size = int(math.sqrt(max_seq_len))
        self.max_seq_len = max_seq_len
        self.to_qkv = nn.Linear(feat_dim, self.n_heads * self.head_dim * 3)
        self.scale_factor = feat_dim**-0.5
        self.merge = nn.Linear(self.head_dim * self.n_heads, feat_dim)
        self.relative_position_bias_table = nn.Parameter(0.02 * torch.randn((2 * self.size - 1) ** 2, self.n_heads))
        coords = torch.stack(torch.meshgrid(torch.arange(self.size), torch.arange(self.size), indexing="ij"))
        flat = torch.flatten(coords, 1)
        rel = (flat[:, :, None] - flat[:, None, :]).permute(1, 2, 0).contiguous()
        rel[:, :, 0] += self.size - 1
        rel[:, :, 1] += self.size - 1
        rel[:, :, 0] *= 2 * self.size - 1
        self.register_buffer("relative_position_index", rel.sum(-1))

    def forward(self, x):
        B, G, P, D = x.shape
        H, DH = self.n_heads, self.head_dim
        q, k, v = torch.chunk(self.to_qkv(x), 3, dim=-1)
        q = q.reshape(B, G, P, H, DH).permute(0, 1, 3, 2, 4)
        k = k.reshape(B, G, P, H, DH).permute(0, 1, 3, 2, 4)
        v = v.reshape(B, G, P, H, DH).permute(0, 1, 3, 2, 4)
        k = k * self.scale_factor
        dot_prod = torch.einsum("B G H I D, B G H J D -> B G H I J", q, k)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        bias = bias.view(self.max_seq_len, self.max_seq_len, -1).permute(2, 0, 1).contiguous().unsqueeze(0)
        dot_prod = F.softmax(dot_prod + bias, dim=-1)
        out = torch.einsum("B G H I J, B G H J D -> B G H I D", dot_prod, v)
        return self.merge(out.permute(0, 1, 3, 2, 4).reshape(B, G, P, D))


class PartitionAttentionLayer(nn.Module):
    def __init__(self, in_channels, head_dim, partition_size, partition_type, grid_size):
        super().__init__()
        n_partitions = grid_size[0] // partition_size
        self.p = partition_size if partition_type == "window" else n_partitions
        self.grid_size = grid_size
        self.swap = partition_type == "grid"
        self.attn_layer = nn.Sequential(nn.LayerNorm(in_channels),
                                        RelativePositionalMultiHeadAttention(in_channels, head_dim, partition_size**2))
        self.mlp_layer = nn.Sequential(nn.LayerNorm(in_channels), nn.Linear(in_channels, 4 * in_channels), nn.GELU(),
                                       nn.Linear(4 * in_channels, in_channels))

    def forward(self, x):
        gh, gw = self.grid_size[0] // self.p, self.grid_size[1] // self.p
        B, C, H, W = x.shape
        P = self.p
        x = x.reshape(B, C, H // P, P, W // P, P).permute(0, 2, 4, 3, 5, 1).reshape(B, (H // P) * (W // P), P * P, C)
        if self.swap:
            x = torch.swapaxes(x, -2, -3)
        x = x + self.attn_layer(x)
        x = x + self.mlp_layer(x)
        if self.swap:
            x = torch.swapaxes(x, -2, -3)
        B, G, PP, C = x.shape
        x = x.reshape(B, gh, gw, P, P, C).permute(0, 5, 1, 3, 2, 4)
        return x.reshape(B, C, gh * P, gw * P)


class TorchvisionMaxViT(nn.Module):
    """torchvision's MaxViT, reduced: a conv stem, one window and one grid attention layer, pool and classifier."""

    def __init__(self, dim=16, head_dim=8, num_classes=10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, dim, 3, stride=2, padding=1), nn.BatchNorm2d(dim), nn.GELU())
        self.layers = nn.Sequential(PartitionAttentionLayer(dim, head_dim, 4, "window", (8, 8)),
                                    PartitionAttentionLayer(dim, head_dim, 4, "grid", (8, 8)))
        self.classifier = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.LayerNorm(dim), nn.Linear(dim, num_classes))

    def forward(self, x):
        return self.classifier(self.layers(self.stem(x)))

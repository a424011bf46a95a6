"""Fixture models with gated and split widths, written the way their public code writes them.

Each class follows the named public source's forward (its chunk/split calls, stored split sizes,
norms and projections), at toy sizes so that the tests stay fast. None imports timm or
transformers code: the patterns are copied here. `GATED` maps a name to ``(factory, example_inputs)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from branch_models import CSPDarkNet, SKResNet, Twins  # noqa: F401 (fixtures of the same sweep)


# The minimal gated MLP (GLU / SwiGLU): one fused Linear, chunked, the halves multiplied.
class GLU(nn.Module):
    def __init__(self, dim: int = 16, hidden: int = 32, classes: int = 4):
        super().__init__()
        self.inp = nn.Linear(8, dim)
        self.fc1 = nn.Linear(dim, 2 * hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, x):
        x = self.inp(x)
        a, g = self.fc1(x).chunk(2, -1)
        return self.head(x + self.fc2(a * F.silu(g)))


# gMLP, timm/models/mlp_mixer.py: SpatialGatingUnit, GatedMlp (gate_layer=sgu), SpatialGatingBlock.
class SpatialGatingUnit(nn.Module):
    def __init__(self, dim: int, seq_len: int, norm_layer=nn.LayerNorm):
        super().__init__()
        gate_dim = dim // 2
        self.norm = norm_layer(gate_dim)
        self.proj = nn.Linear(seq_len, seq_len)

    def forward(self, x):
        u, v = x.chunk(2, dim=-1)
        v = self.norm(v)
        v = self.proj(v.transpose(-1, -2))
        return u * v.transpose(-1, -2)


class GatedMlp(nn.Module):
    def __init__(self, in_features: int, hidden_features: int, gate_layer=None):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = nn.GELU()
        self.drop1 = nn.Dropout(0.0)
        if gate_layer is not None:
            self.gate = gate_layer(hidden_features)
            hidden_features = hidden_features // 2
        else:
            self.gate = nn.Identity()
        self.norm = nn.Identity()
        self.fc2 = nn.Linear(hidden_features, in_features)
        self.drop2 = nn.Dropout(0.0)

    def forward(self, x):
        x = self.fc1(x)
        x = self.act(x)
        x = self.drop1(x)
        x = self.gate(x)
        x = self.norm(x)
        x = self.fc2(x)
        x = self.drop2(x)
        return x


class SpatialGatingBlock(nn.Module):
    def __init__(self, dim: int, seq_len: int, mlp_ratio: float = 6):
        super().__init__()
        channel_dim = int(dim * mlp_ratio)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.mlp_channels = GatedMlp(dim, channel_dim,
                                     gate_layer=lambda d: SpatialGatingUnit(d, seq_len=seq_len))
        self.drop_path = nn.Identity()

    def forward(self, x):
        return x + self.drop_path(self.mlp_channels(self.norm(x)))


class GMLP(nn.Module):
    """timm's MlpMixer with block_layer=SpatialGatingBlock, mlp_layer=GatedMlp (gmlp_ti16_224, tiny)."""

    def __init__(self, img_size: int = 16, patch_size: int = 4, embed_dim: int = 16, depth: int = 2,
                 num_classes: int = 10):
        super().__init__()
        self.stem = nn.Conv2d(3, embed_dim, patch_size, patch_size)  # timm PatchEmbed.proj
        seq_len = (img_size // patch_size) ** 2
        self.blocks = nn.Sequential(*[SpatialGatingBlock(embed_dim, seq_len) for _ in range(depth)])
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.head = nn.Linear(embed_dim, num_classes)

    def forward(self, x):
        x = self.stem(x).flatten(2).transpose(1, 2)  # PatchEmbed: NCHW -> NLC
        x = self.norm(self.blocks(x))
        return self.head(x.mean(dim=1))


# MambaOut, timm/models/mambaout.py: GatedConvBlock, split sizes stored in `split_indices`.
class GatedConvBlock(nn.Module):
    def __init__(self, dim: int, expansion_ratio: float = 8 / 3, kernel_size: int = 7, conv_ratio: float = 1.0):
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        hidden = int(expansion_ratio * dim)
        self.fc1 = nn.Linear(dim, hidden * 2)
        self.act = nn.GELU()
        conv_channels = int(conv_ratio * dim)
        self.split_indices = (hidden, hidden - conv_channels, conv_channels)
        self.conv = nn.Conv2d(conv_channels, conv_channels, kernel_size=kernel_size, padding=kernel_size // 2,
                              groups=conv_channels)
        self.fc2 = nn.Linear(hidden, dim)
        self.ls = nn.Identity()
        self.drop_path = nn.Identity()

    def forward(self, x):
        shortcut = x  # [B, H, W, C]
        x = self.norm(x)
        x = self.fc1(x)
        g, i, c = torch.split(x, self.split_indices, dim=-1)
        c = c.permute(0, 3, 1, 2)  # [B, H, W, C] -> [B, C, H, W]
        c = self.conv(c)
        c = c.permute(0, 2, 3, 1)  # [B, C, H, W] -> [B, H, W, C]
        x = self.fc2(self.act(g) * torch.cat((i, c), dim=-1))
        x = self.ls(x)
        x = self.drop_path(x)
        return x + shortcut


class MambaOut(nn.Module):
    """timm's MambaOut (stem conv, two stages of gated CNN blocks, a channels-last downsample), tiny."""

    def __init__(self, dims=(12, 24), depth: int = 2, num_classes: int = 10):
        super().__init__()
        self.stem = nn.Conv2d(3, dims[0], 4, 4)
        self.stage0 = nn.Sequential(*[GatedConvBlock(dims[0]) for _ in range(depth)])
        self.down = nn.Conv2d(dims[0], dims[1], 3, 2, 1)  # timm Downsample: permute, conv, permute
        self.stage1 = nn.Sequential(*[GatedConvBlock(dims[1], conv_ratio=0.5) for _ in range(depth)])
        self.norm = nn.LayerNorm(dims[1])
        self.fc = nn.Linear(dims[1], num_classes)

    def forward(self, x):
        x = self.stem(x).permute(0, 2, 3, 1)
        x = self.stage0(x)
        x = self.down(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        x = self.stage1(x)
        return self.fc(self.norm(x.mean((1, 2))))


# EVA-02, timm/models/eva.py: EvaAttention (fused qkv through F.linear with cat(q_bias, k_bias, v_bias),
# rotary embedding from RotaryEmbeddingCat's `pos_embed` buffer [N, 2 * head_dim]) and GluMlp
# (SwiGLUPacked: gate_last=False) below a class token and a position embedding.
def rot(x):
    return torch.stack([-x[..., 1::2], x[..., ::2]], -1).reshape(x.shape)


def apply_rot_embed_cat(x, emb):
    sin_emb, cos_emb = emb.chunk(2, -1)
    return (x * cos_emb + rot(x) * sin_emb).to(dtype=x.dtype)


class RotaryEmbeddingCat(nn.Module):
    def __init__(self, dim: int, feat_shape: int):
        super().__init__()
        freqs = torch.arange(feat_shape * feat_shape)[:, None] / (10 ** torch.linspace(0, 2, dim // 2))[None]
        emb = torch.cat([freqs.sin(), freqs.sin()], -1), torch.cat([freqs.cos(), freqs.cos()], -1)
        self.register_buffer("pos_embed", torch.cat(emb, -1), persistent=False)

    def get_embed(self):
        return self.pos_embed


class EvaAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int, num_prefix_tokens: int = 1):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        attn_dim = self.head_dim * self.num_heads
        self.scale = self.head_dim ** -0.5
        self.num_prefix_tokens = num_prefix_tokens
        self.qkv = nn.Linear(dim, attn_dim * 3, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(attn_dim))
        self.register_buffer("k_bias", torch.zeros(attn_dim), persistent=False)
        self.v_bias = nn.Parameter(torch.zeros(attn_dim))
        self.norm = nn.Identity()
        self.proj = nn.Linear(attn_dim, dim)

    def forward(self, x, rope=None):
        B, N, C = x.shape
        qkv_bias = torch.cat((self.q_bias, self.k_bias, self.v_bias))
        qkv = F.linear(x, weight=self.qkv.weight, bias=qkv_bias)
        qkv = qkv.reshape(B, N, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        if rope is not None:
            npt = self.num_prefix_tokens
            q = torch.cat([q[:, :, :npt, :], apply_rot_embed_cat(q[:, :, npt:, :], rope)], dim=2).type_as(v)
            k = torch.cat([k[:, :, :npt, :], apply_rot_embed_cat(k[:, :, npt:, :], rope)], dim=2).type_as(v)
        x = F.scaled_dot_product_attention(q, k, v)
        x = x.transpose(1, 2).reshape(B, N, C)
        x = self.norm(x)
        return self.proj(x)


class GluMlp(nn.Module):
    def __init__(self, in_features: int, hidden_features: int, gate_last: bool = False):
        super().__init__()
        self.gate_last = gate_last
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = nn.SiLU()
        self.norm = nn.Identity()
        self.fc2 = nn.Linear(hidden_features // 2, in_features)

    def forward(self, x):
        x = self.fc1(x)
        x1, x2 = x.chunk(2, dim=-1)
        x = x1 * self.act(x2) if self.gate_last else self.act(x1) * x2
        x = self.norm(x)
        return self.fc2(x)


class EvaBlock(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4 * 2 / 3):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = EvaAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = GluMlp(dim, int(dim * mlp_ratio) * 2)

    def forward(self, x, rope=None):
        x = x + self.attn(self.norm1(x), rope=rope)
        return x + self.mlp(self.norm2(x))


class Eva(nn.Module):
    """timm's Eva as eva02_tiny_patch14_224 builds it (swiglu_mlp, use_rot_pos_emb), tiny, with a classifier."""

    def __init__(self, img_size: int = 16, patch_size: int = 4, embed_dim: int = 24, depth: int = 2,
                 num_heads: int = 3, num_classes: int = 10):
        super().__init__()
        grid = img_size // patch_size
        self.patch_embed = nn.Conv2d(3, embed_dim, patch_size, patch_size)
        self.cls_token = nn.Parameter(torch.randn(1, 1, embed_dim) * 0.02)
        self.pos_embed = nn.Parameter(torch.randn(1, grid * grid + 1, embed_dim) * 0.02)
        self.rope = RotaryEmbeddingCat(embed_dim // num_heads, grid)
        self.blocks = nn.ModuleList([EvaBlock(embed_dim, num_heads) for _ in range(depth)])
        self.norm = nn.Identity()
        self.fc_norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.head = nn.Linear(embed_dim, num_classes)

    def forward(self, x):
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        rope = self.rope.get_embed()
        for blk in self.blocks:
            x = blk(x, rope=rope)
        x = self.norm(x)
        x = x[:, 1:].mean(dim=1)  # global_pool='avg' over the patch tokens
        return self.head(self.fc_norm(x))


GATED = {
    "glu": (GLU, lambda: torch.randn(2, 8)),
    "gmlp": (GMLP, lambda: torch.randn(2, 3, 16, 16)),
    "mambaout": (MambaOut, lambda: torch.randn(2, 3, 32, 32)),
    "eva02": (Eva, lambda: torch.randn(2, 3, 16, 16)),
    "sknet": (SKResNet, lambda: torch.randn(2, 3, 16, 16)),
    "twins": (Twins, lambda: torch.randn(2, 3, 32, 32)),
}

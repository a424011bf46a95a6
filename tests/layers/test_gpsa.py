"""ConViT's gated positional self-attention: fused qk, separate v, both reshaped to the input width.

The pattern as timm writes it (timm/models/convit.py, ``GPSA``), written out here:
``qk(x).reshape(B, N, 2, num_heads, C // num_heads)``, ``v(x).reshape(B, N, num_heads, C // num_heads)``,
per-head position scores (``pos_proj``: Linear(3, num_heads)) mixed in by per-head gates. Before,
``v`` rooted a width group of its own and every residual cut broke the block ("shape
'[1, 196, 2, 4, 24]' is invalid"): convit_tiny lost 31% of its parameters, now 73%.
"""

from __future__ import annotations

import torch
from torch import nn

import shrink
from oracle import assert_matches_oracle


class GPSA(nn.Module):
    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qk = nn.Linear(dim, dim * 2, bias=False)
        self.v = nn.Linear(dim, dim, bias=False)
        self.proj = nn.Linear(dim, dim)
        self.pos_proj = nn.Linear(3, num_heads)
        self.gating_param = nn.Parameter(torch.randn(num_heads))
        self.rel_indices = torch.zeros(1, 1, 1, 3)

    def forward(self, x):
        B, N, C = x.shape
        if self.rel_indices.shape[1] != N:
            self.rel_indices = _rel_indices(N)
        qk = self.qk(x).reshape(B, N, 2, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k = qk[0], qk[1]
        pos_score = self.pos_proj(self.rel_indices).expand(B, -1, -1, -1).permute(0, 3, 1, 2).softmax(dim=-1)
        patch_score = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
        gating = self.gating_param.view(1, -1, 1, 1)
        attn = (1.0 - torch.sigmoid(gating)) * patch_score + torch.sigmoid(gating) * pos_score
        attn = attn / attn.sum(dim=-1).unsqueeze(-1)
        v = self.v(x).reshape(B, N, self.num_heads, C // self.num_heads).permute(0, 2, 1, 3)
        return self.proj((attn @ v).transpose(1, 2).reshape(B, N, C))


def _rel_indices(n: int) -> torch.Tensor:
    """[1, n, n, 3]: x offset, y offset and squared distance between the patches of a square grid."""
    side = int(n**0.5)
    ind = torch.arange(side).view(1, -1) - torch.arange(side).view(-1, 1)
    dx = ind.repeat(side, side)
    dy = ind.repeat_interleave(side, dim=0).repeat_interleave(side, dim=1)
    return torch.stack([dx, dy, dx**2 + dy**2], dim=-1).unsqueeze(0).float()


class ConViT(nn.Module):
    """Patch embedding, GPSA blocks with an MLP, mean pool, classifier (LayerNorms only with ``norms``)."""

    def __init__(self, dim: int = 32, heads: int = 4, depth: int = 2, norms: bool = True):
        super().__init__()
        self.stem = nn.Conv2d(3, dim, 4, 4)
        norm = (lambda: nn.LayerNorm(dim)) if norms else nn.Identity
        self.blocks = nn.ModuleList(nn.ModuleDict({
            "norm1": norm(), "attn": GPSA(dim, heads), "norm2": norm(),
            "mlp": nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))}) for _ in range(depth))
        self.head = nn.Linear(dim, 5)

    def forward(self, x):
        x = self.stem(x).flatten(2).transpose(1, 2)
        for b in self.blocks:
            x = x + b["attn"](b["norm1"](x))
            x = x + b["mlp"](b["norm2"](x))
        return self.head(x.mean(1))


def test_gpsa_head_dims_follow_the_residual_cut():
    torch.manual_seed(0)
    model = ConViT().eval()
    x = torch.randn(2, 3, 16, 16)
    result = shrink.compress(model, x, ratio=0.5)
    assert result.kept_whole == {"head": "model output"}
    for b in result.model.blocks:
        attn = b["attn"]
        assert attn.v.out_features == attn.proj.in_features == 16 and attn.qk.out_features == 32
        assert attn.num_heads == 4 and attn.pos_proj.out_features == 4  # the heads stay
    assert result.after.params < 0.4 * result.before.params
    with torch.no_grad():
        assert result.model(x).shape == model(x).shape


def test_gpsa_cut_equals_masked_without_layernorms():
    torch.manual_seed(0)
    model = ConViT(norms=False).eval()
    x = torch.randn(2, 3, 16, 16)
    result = shrink.compress(model, x, ratio=0.5)
    assert [s.op for s in result.plan.steps].count("head_dims") == 2
    assert_matches_oracle(model, result, x)

"""Attention reshaped to its input width (timm, nanoGPT, Swin): head dims follow the residual cut."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import shrink
from models import Attention
from oracle import assert_matches_oracle
from real_models import CaiT, CausalSelfAttention, ClassAttn, TalkingHeadAttn, TimmAttention, WindowAttention
from shrink.layers import tied_attention


class Wrap(nn.Module):
    """embed -> x + attention(x) -> head, no normalisation, so the cut must equal masking exactly."""

    def __init__(self, attn, dim=32):
        super().__init__()
        self.embed, self.attn, self.head = nn.Linear(12, dim), attn, nn.Linear(dim, 5)

    def forward(self, x):
        x = self.embed(x)
        return self.head((x + self.attn(x)).mean(1))


MAKERS = {
    "timm": lambda: TimmAttention(32, num_heads=4),
    "nanogpt": lambda: CausalSelfAttention(32, n_head=4, block_size=8),
    "swin": lambda: WindowAttention(32, window_size=2, num_heads=4),
    "talking_heads": lambda: TalkingHeadAttn(32, num_heads=4),
    "class_attention": lambda: ClassAttn(32, num_heads=4),
}


@pytest.mark.parametrize("kind", sorted(MAKERS))
@pytest.mark.parametrize("ratio", [0.5, 0.3])
def test_head_dims_follow_the_input_width(kind, ratio):
    model = Wrap(MAKERS[kind]()).eval()
    x = torch.randn(2, 4, 12)
    result = shrink.compress(model, x, ratio=ratio)
    attn = result.model.attn
    width = result.model.embed.out_features
    # ratio 0.3 of 32 is 9 channels: trimmed to 8, a multiple of the 4 heads
    assert width == {0.5: 16, 0.3: 24}[ratio]
    proj = attn.c_proj if kind == "nanogpt" else attn.proj
    if kind == "class_attention":
        assert attn.q.out_features == attn.k.out_features == attn.v.out_features == width
    else:
        fused = attn.c_attn if kind == "nanogpt" else attn.qkv
        assert fused.out_features == 3 * width
    assert proj.in_features == width
    assert getattr(attn, "num_heads", getattr(attn, "n_head", None)) == 4  # heads stay; each is narrower
    assert_matches_oracle(model, result, x)


def test_attributes_the_forward_reads_are_updated():
    model = Wrap(CausalSelfAttention(32, n_head=4, block_size=8)).eval()
    result = shrink.compress(model, torch.randn(2, 4, 12), ratio=0.5)
    assert result.model.attn.n_embd == 16  # c_attn(x).split(self.n_embd, dim=2)
    model = Wrap(TimmAttention(32, num_heads=4)).eval()
    result = shrink.compress(model, torch.randn(2, 4, 12), ratio=0.5)
    assert result.model.attn.head_dim == 4  # reshape(B, N, 3, num_heads, head_dim)
    assert result.model.attn.scale == pytest.approx(8 ** -0.5)  # stored: unchanged, so masking is exact


def test_known_answer_weakest_dims_of_each_head_go():
    block = tied_attention.TiedBlock("a", nn.Module(), nn.Linear(8, 24), nn.Linear(8, 8), num_heads=2)
    with torch.no_grad():
        block.qkv.weight.fill_(1.0)
        block.qkv.weight.view(3, 2, 4, 8)[:, 0, 2] = 0.1  # head 0: dim 2 weakest
        block.qkv.weight.view(3, 2, 4, 8)[:, 1, 0] = 0.1  # head 1: dim 0 weakest
    assert tied_attention.dims_to_remove(block, 1, p=1) == [2, 4]


def test_a_block_that_reshapes_with_minus_one_keeps_whole_head_cuts():
    """tests/models.py Attention reads reshape(b, n, -1): the probe sees it run with a head fewer."""
    model = Attention(dim=32, num_heads=4)
    result = shrink.compress(model, torch.randn(2, 5, 12), ratio={"": 0.5})
    assert result.model.num_heads == 2 and result.model.head_dim == 8
    assert all(step.op != "head_dims" for step in result.plan.steps)


def test_heads_are_no_longer_cut_where_the_forward_reads_the_input_width():
    """Before: 2 of 4 heads cut, then reshape(B, N, C) failed whenever the residual lost other than half."""
    model = Wrap(TimmAttention(32, num_heads=4)).eval()
    result = shrink.compress(model, torch.randn(2, 4, 12), ratio=0.25)
    assert result.model.attn.num_heads == 4
    assert all(step.op != "heads" for step in result.plan.steps)
    assert result.model(torch.randn(3, 4, 12)).shape == (3, 5)


def test_analyze_names_the_width_that_narrows_the_heads():
    model = Wrap(CausalSelfAttention(32, n_head=4, block_size=8)).eval()
    report = shrink.analyze(model, torch.randn(2, 4, 12))
    group = next(g for g in report.groups if g.root == "embed")
    assert "attention head dims" in group.kinds


def test_cait_residual_cut_with_talking_heads_and_class_attention(tmp_path):
    # CaiT's residual reaches both attention kinds; neither can lose a head (talking heads mix them,
    # class attention reshapes to C // num_heads), so every head narrows with the residual.
    torch.manual_seed(0)
    model, x = CaiT().eval(), torch.randn(2, 6, 12)
    result = shrink.compress(model, x, ratio=0.5)
    assert set(result.kept_whole) == {"head"}, result.kept_whole
    cut = result.model
    assert cut.patch_embed.out_features == 16
    for blk in [*cut.blocks, *cut.blocks_token_only]:
        assert blk["attn"].num_heads == 4 and blk["attn"].proj.in_features == 16
    assert cut.blocks_token_only[0]["attn"].k.out_features == 16
    assert sum(p.numel() for p in cut.parameters()) < 0.4 * sum(p.numel() for p in model.parameters())
    with torch.no_grad():
        assert cut(x).shape == model(x).shape
    loaded = shrink.load(shrink.save(result, tmp_path / "out"), CaiT())
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), cut(x))
    assert shrink.export_onnx(cut, x, tmp_path / "m.onnx").max_rel_diff <= 1e-4

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


class TimmAttentionAttnDim(TimmAttention):
    """timm 1.0's ``layers/attention.py``: the heads go back through ``reshape(B, N, self.attn_dim)``,
    a stored ``num_heads * head_dim``."""

    def __init__(self, dim, num_heads=4):
        super().__init__(dim, num_heads)
        self.attn_dim = num_heads * self.head_dim

    def forward(self, x):
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        x = ((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1) @ v
        return self.proj(x.transpose(1, 2).reshape(B, N, self.attn_dim))


MAKERS = {
    "timm": lambda: TimmAttention(32, num_heads=4),
    "timm_attn_dim": lambda: TimmAttentionAttnDim(32, num_heads=4),
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


class FusedTimmAttention(TimmAttention):
    """timm's Attention as it runs by default: ``fused_attn`` set, scaled_dot_product_attention called
    without the stored ``scale``, so the score is divided by sqrt of the head_dim it sees."""

    def __init__(self, dim, num_heads=4):
        super().__init__(dim, num_heads)
        self.fused_attn = True

    def forward(self, x):
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        if self.fused_attn:
            x = torch.nn.functional.scaled_dot_product_attention(q, k, v)
        else:
            x = ((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1) @ v
        return self.proj(x.transpose(1, 2).reshape(B, N, C))


def test_fused_attention_ignores_the_stored_scale_so_queries_are_rescaled():
    # Before: the stored float scale was taken as what the forward reads; the narrower heads then
    # divided q.k by sqrt(4) instead of sqrt(8), and the cut model differed from masking by ~1e-3.
    model = Wrap(FusedTimmAttention(32, num_heads=4)).eval()
    x = torch.randn(2, 4, 12)
    result = shrink.compress(model, x, ratio=0.5)
    assert result.model.attn.head_dim == 4
    assert_matches_oracle(model, result, x)


class BeitAttention(nn.Module):
    """timm/models/beit.py ``Attention`` (qkv_bias, fused_attn): qkv without bias, its own q/v biases
    and a zero k bias buffer passed through ``F.linear``, reshape(B, N, C) to the input width."""

    def __init__(self, dim, num_heads=4):
        super().__init__()
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.scale = head_dim ** -0.5
        self.fused_attn = True
        self.qkv = nn.Linear(dim, dim * 3, bias=False)
        self.q_bias = nn.Parameter(torch.randn(dim))
        self.register_buffer("k_bias", torch.zeros(dim), persistent=False)
        self.v_bias = nn.Parameter(torch.randn(dim))
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        B, N, C = x.shape
        qkv_bias = torch.cat((self.q_bias, self.k_bias, self.v_bias))
        qkv = torch.nn.functional.linear(x, weight=self.qkv.weight, bias=qkv_bias)
        q, k, v = qkv.reshape(B, N, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        x = torch.nn.functional.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(B, N, C))


def test_beit_qkv_through_f_linear_with_its_own_biases_loses_head_dims(tmp_path):
    # Before: F.linear on qkv.weight hid the layer from the graph; the residual cut left qkv's
    # columns whole and broke the block, so self-healing kept the residual whole.
    model = Wrap(BeitAttention(32, num_heads=4)).eval()
    x = torch.randn(2, 4, 12)
    result = shrink.compress(model, x, ratio=0.5)
    attn = result.model.attn
    assert result.model.embed.out_features == 16 and attn.qkv.weight.shape == (48, 16)
    assert attn.q_bias.shape == attn.v_bias.shape == attn.k_bias.shape == (16,)
    assert isinstance(attn.v_bias, nn.Parameter) and "k_bias" in dict(attn.named_buffers())
    assert_matches_oracle(model, result, x)
    loaded = shrink.load(shrink.save(result, tmp_path / "o"), Wrap(BeitAttention(32, num_heads=4)))
    with torch.no_grad():
        assert torch.equal(loaded(x), result.model(x))


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

"""EVA attention (layers/eva.py): whole heads cut past the rotary table, q/v biases cut with them,
and the forward that reshapes to its input width replaced so that heads and the residual are cut apart."""

from __future__ import annotations

import copy

import torch
from torch import nn

import shrink
from gated_models import Eva, EvaAttention, RotaryEmbeddingCat
from oracle import assert_matches_oracle
from shrink.layers import eva, tied_attention


class RopeAttention(nn.Module):
    """embed -> x + attention(x, rope) -> head: no normalisation, so cutting heads equals masking exactly."""

    def __init__(self, dim: int = 24, heads: int = 3, tokens: int = 5):
        super().__init__()
        self.embed, self.head = nn.Linear(12, dim), nn.Linear(dim, 5)
        self.attn = EvaAttention(dim, heads)
        self.rope = RotaryEmbeddingCat(dim // heads, 2)  # 2 x 2 patch tokens after one class token
        with torch.no_grad():  # timm starts the biases at zero; trained ones are not
            self.attn.q_bias.normal_()
            self.attn.v_bias.normal_()

    def forward(self, x):
        x = self.embed(x)
        return self.head((x + self.attn(x, rope=self.rope.get_embed())).mean(1))


def test_recognised_as_eva_not_as_attention_tied_to_its_width():
    attn = EvaAttention(24, 3)
    assert eva.matches(attn) and not tied_attention.is_tied(attn)


def test_heads_cut_with_their_biases_and_masking_is_exact():
    # Before: the block counted as tied to its input width (head dims cut), which the rotary table
    # forbids: its heads stayed whole.
    model, x = RopeAttention().eval(), torch.randn(2, 5, 12)
    result = shrink.compress(model, x, ratio={"attn": 0.5})
    attn = result.model.attn
    assert attn.num_heads == 2 and attn.head_dim == 8  # 1 of 3 heads goes; head_dim stays (rotary table)
    assert attn.qkv.out_features == 3 * 16 and attn.proj.in_features == 16
    assert attn.q_bias.shape == attn.v_bias.shape == attn.k_bias.shape == (16,)
    assert isinstance(attn.q_bias, nn.Parameter) and "k_bias" in dict(attn.named_buffers())
    assert result.plan.checks["exact"] == ["attn"]
    assert_matches_oracle(model, result, x)


def test_kept_heads_keep_their_own_bias_entries():
    model, x = RopeAttention().eval(), torch.randn(2, 5, 12)
    with torch.no_grad():
        model.attn.qkv.weight.view(3, 3, 8, 24)[:, 1] *= 1e-3  # head 1 is the weakest
    result = shrink.compress(model, x, ratio={"attn": 0.5})
    before, after = model.attn.q_bias.view(3, 8), result.model.attn.q_bias.view(2, 8)
    assert torch.equal(after, before[[0, 2]])
    assert torch.equal(result.model.attn.v_bias.view(2, 8), model.attn.v_bias.view(3, 8)[[0, 2]])


def test_eva_model_loses_heads_and_residual_width_and_round_trips(tmp_path):
    model, x = Eva().eval(), torch.randn(2, 3, 16, 16)
    result = shrink.compress(model, x)
    assert result.after.params < 2 / 3 * result.before.params
    assert result.kept_whole == {"head": "model output"}
    for block in result.model.blocks:
        assert block.attn.num_heads == 2 and block.attn.proj.in_features == 16
        assert block.attn.qkv.in_features == 12  # the residual is cut too: heads x head_dim != width
    with torch.no_grad():
        out = result.model(x)
    assert out.shape == model(x).shape
    shrink.save(result, tmp_path / "out")
    torch.manual_seed(1)
    loaded = shrink.load(tmp_path / "out", Eva())
    with torch.no_grad():
        assert torch.equal(loaded(x), out)
    report = shrink.export_onnx(result.model, x, tmp_path / "eva.onnx")
    assert report.max_rel_diff <= 1e-4


def test_cut_model_copies_and_compresses_again():
    model, x = Eva().eval(), torch.randn(2, 3, 16, 16)
    once = shrink.compress(model, x, ratio=0.3).model
    twin = copy.deepcopy(once)
    assert twin.blocks[0].attn.forward.attn is twin.blocks[0].attn  # the copy runs its own weights
    with torch.no_grad():
        assert torch.equal(twin(x), once(x))
    again = shrink.compress(once, x, ratio=0.5)
    with torch.no_grad():
        assert again.model(x).shape == (2, 10)
    assert again.after.params < again.before.params


def test_a_single_head_is_never_cut():
    model, x = RopeAttention(dim=8, heads=1).eval(), torch.randn(2, 5, 12)
    result = shrink.compress(model, x, ratio={"attn": 0.5})
    assert result.model.attn.num_heads == 1

"""BLOOM: head dims cut with the hidden width, the head count (and so the ALiBi slopes) kept.

BLOOM's fused ``query_key_value`` is laid out per head, [heads, (q, k, v), head_dim], and its
head size is derived as hidden_size // n_head: a cut of the hidden width must take the same
number of dims from every head, out of the interleaved rows, and set the stored
``inv_norm_factor`` to what a model built from the new config computes.
"""

from __future__ import annotations

import math

import pytest
import torch

import shrink
from shrink.layers import tied_attention

transformers = pytest.importorskip("transformers")


def _bloom(hidden=32, heads=4):
    torch.manual_seed(0)
    config = transformers.BloomConfig(vocab_size=64, hidden_size=hidden, n_layer=2, n_head=heads)
    return transformers.BloomForCausalLM(config).eval()


def test_bloom_attention_is_tied_with_rows_per_head():
    model = _bloom()
    attn = model.transformer.h[0].self_attention
    block = tied_attention.as_tied("a", attn)
    assert block is not None and block.per_head and block.num_heads == 4 and block.head_dim == 8
    # dim 1 of head 2: its q, k, v rows sit at 2*24 + {0, 8, 16} + 1
    assert block.head_rows([2 * 8 + 1]) == [(attn.query_key_value, [49, 57, 65])]
    assert block.query_rows()[:3] == [0, 1, 2] and block.query_rows()[8] == 24


def test_cut_dims_whose_rows_are_zero_leave_the_model_unchanged():
    """Known answer: the removed dims' q, k and v rows are zero, so once they are gone every
    score q.k and value is what it was if the scale is right; a wrong layout (rows taken from
    other heads) or a missed scale changes the logits."""
    model = _bloom()
    x = {"input_ids": torch.randint(0, 64, (2, 7))}
    removed = [h * 8 + d for h in range(4) for d in (0, 5)]  # two dims of every head
    blocks = [tied_attention.as_tied(f"h{i}", layer.self_attention) for i, layer in enumerate(model.transformer.h)]
    with torch.no_grad():
        for block in blocks:
            for layer, rows in block.head_rows(removed):
                layer.weight[rows] = 0
                layer.bias[rows] = 0
        before = model(**x).logits
        for block in blocks:
            tied_attention.cut_dims(block, removed)
        after = model(**x).logits
    attn = model.transformer.h[0].self_attention
    assert attn.head_dim == 6 and attn.query_key_value.out_features == 72 and attn.dense.in_features == 24
    assert attn.inv_norm_factor == pytest.approx(1 / math.sqrt(6)) and attn.num_heads == 4
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5)


def test_compress_cuts_bloom_and_the_folder_reads_itself_back(tmp_path):
    model = _bloom()
    x = {"input_ids": torch.randint(0, 64, (1, 12))}
    result = shrink.compress(model, x, ratio=0.5)
    assert result.after.params < 0.5 * result.before.params  # hidden, head dims and the 4x FFN
    cfg = result.model.config
    assert cfg.n_head == 4 and cfg.hidden_size in (16, 20, 24) and cfg.hidden_size % 4 == 0
    mlp = result.model.transformer.h[0].mlp
    assert mlp.dense_h_to_4h.out_features == 4 * cfg.hidden_size
    folder = shrink.save_pretrained(result, tmp_path / "out")
    loaded = transformers.AutoModelForCausalLM.from_pretrained(folder).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(**x).logits, result.model(**x).logits, rtol=1e-5, atol=1e-6)

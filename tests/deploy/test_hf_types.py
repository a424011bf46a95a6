"""Hugging Face families the type sweep (benchmarks/hf_types.py) found a config field missing for."""

from __future__ import annotations

import torch

import shrink
from hf_models import token_inputs, transformers

T = transformers


def _round_trip(model, x, tmp_path):
    result = shrink.compress(model.eval(), x, ratio=0.5)
    folder = shrink.save_pretrained(result, tmp_path / "out")
    loaded = type(model).from_pretrained(folder).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(**x).logits, result.model(**x).logits, rtol=1e-5, atol=1e-6)
    return result, loaded


def test_experts_width_goes_to_moe_intermediate_size_not_the_dense_ffn_field(tmp_path):
    # Qwen2-MoE: experts are moe_intermediate_size wide; intermediate_size is the dense FFN (unused here).
    torch.manual_seed(0)
    config = T.Qwen2MoeConfig(vocab_size=100, hidden_size=32, intermediate_size=96, moe_intermediate_size=64,
                              shared_expert_intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                              num_key_value_heads=2, num_experts=4, num_experts_per_tok=2,
                              max_position_embeddings=64)
    result, loaded = _round_trip(T.Qwen2MoeForCausalLM(config), token_inputs(), tmp_path)
    assert loaded.config.moe_intermediate_size == 32
    assert loaded.config.intermediate_size == 96
    assert result.after.params < result.before.params

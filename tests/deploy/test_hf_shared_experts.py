"""DeepSeek-style shared experts: the config builds them ``moe_intermediate_size * n_shared_experts``
wide, so a cut of the routed experts narrows them alike (their own lowest units); the save used to
be refused ("shared_experts.down_proj.weight: the config builds (64, 16), the model has (64, 32)")."""

from __future__ import annotations

import torch

import shrink
from hf_models import transformers as T


def test_shared_experts_follow_the_routed_experts_and_the_folder_reloads_identical(tmp_path):
    torch.manual_seed(0)
    config = T.AutoConfig.for_model(
        "deepseek_v3", vocab_size=100, hidden_size=64, intermediate_size=128, moe_intermediate_size=32,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4, n_routed_experts=4, n_shared_experts=2,
        num_experts_per_tok=2, first_k_dense_replace=1, q_lora_rank=16, kv_lora_rank=16, qk_rope_head_dim=8,
        qk_nope_head_dim=8, v_head_dim=16, n_group=2, topk_group=1, max_position_embeddings=64)
    model = T.AutoModelForCausalLM.from_config(config).eval()
    x = {"input_ids": torch.randint(0, 100, (2, 8), generator=torch.Generator().manual_seed(1))}
    result = shrink.compress(model, x, ratio=0.5)
    cut = result.model
    width = cut.config.moe_intermediate_size
    assert width < 32
    shared = cut.model.layers[1].mlp.shared_experts
    assert shared.down_proj.in_features == shared.gate_proj.out_features == 2 * width
    assert not any("shared_experts" in k for k in result.kept_whole)
    loaded = type(model).from_pretrained(shrink.save_pretrained(result, tmp_path / "o")).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(**x).logits, cut(**x).logits, rtol=1e-5, atol=1e-6)

"""Hugging Face families the type sweep (benchmarks/hf_types.py) found a config field missing for."""

from __future__ import annotations

import pytest
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


def _audio_inputs():
    return {"input_values": torch.randn(1, 2000, generator=torch.Generator().manual_seed(0))}


def _wav2vec2_config(**extra):
    return dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                conv_dim=(16, 16), conv_stride=(5, 4), conv_kernel=(10, 4), num_feat_extract_layers=2,
                num_conv_pos_embeddings=8, num_conv_pos_embedding_groups=2, num_labels=3, **extra)


@pytest.mark.parametrize("family", ["Wav2Vec2", "Hubert"])
def test_speech_encoder_ffn_is_cut_and_stated_as_intermediate_size(family, tmp_path):
    # feed_forward.intermediate_dense is intermediate_size wide in every wav2vec2-style encoder.
    torch.manual_seed(0)
    config = getattr(T, f"{family}Config")(**_wav2vec2_config())
    model = getattr(T, f"{family}ForSequenceClassification")(config)
    result, loaded = _round_trip(model, _audio_inputs(), tmp_path)
    assert loaded.config.intermediate_size == 32
    encoder = getattr(result.model, family.lower()).encoder
    assert {layer.feed_forward.intermediate_dense.out_features for layer in encoder.layers} == {32}


def test_float_embed_scale_is_folded_so_biogpt_reloads_identical(tmp_path):
    # BioGptScaledWordEmbedding multiplies by a float sqrt(hidden_size) set from the config.
    torch.manual_seed(0)
    config = T.BioGptConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                            intermediate_size=64, max_position_embeddings=64, scale_embedding=True)
    result, loaded = _round_trip(T.BioGptForCausalLM(config), token_inputs(), tmp_path)
    assert loaded.config.hidden_size < 32
    assert loaded.biogpt.embed_tokens.embed_scale == pytest.approx(loaded.config.hidden_size ** 0.5)


@pytest.mark.parametrize("name", ["xlnet", "ctrl"])
def test_ffns_named_otherwise_are_cut_and_stated_in_their_field(name, tmp_path):
    # XLNet's ff.layer_1 (d_inner) reads a residual width with no attention block found (its q/k/v
    # are bare parameters): that width is no FFN. CTRL's FFN is a Sequential, ffn.0 (dff).
    torch.manual_seed(0)
    if name == "xlnet":
        model = T.XLNetLMHeadModel(T.XLNetConfig(vocab_size=100, d_model=32, n_layer=2, n_head=4, d_head=8,
                                                 d_inner=64))
        field = "d_inner"
    else:
        model = T.CTRLLMHeadModel(T.CTRLConfig(vocab_size=100, n_embd=32, n_layer=2, n_head=4, dff=64,
                                               n_positions=64))
        field = "dff"
    result, loaded = _round_trip(model, {"input_ids": torch.randint(0, 100, (1, 8))}, tmp_path)
    assert getattr(loaded.config, field) == 32
    assert result.after.params < result.before.params

"""Hugging Face families whose save_pretrained folder did not read itself back (issue 18's sweep)."""

from __future__ import annotations

import torch

import shrink
from hf_models import token_inputs, transformers

T = transformers


def _round_trip(model, x, tmp_path, *, output="logits"):
    """Compress at defaults, save, reload: the reloaded model gives the compressed model's outputs."""
    result = shrink.compress(model.eval(), x, ratio=0.5)
    folder = shrink.save_pretrained(result, tmp_path / "out")
    loaded = type(model).from_pretrained(folder).eval()
    with torch.no_grad():
        torch.testing.assert_close(getattr(loaded(**x), output), getattr(result.model(**x), output),
                                   rtol=1e-5, atol=1e-5)
    assert result.after.params < 0.8 * result.before.params, result.kept_whole
    return result, loaded


def test_lfm2_ffn_width_is_written_with_auto_adjust_off(tmp_path):
    # LFM2 builds int(2 * 128 / 3) rounded up to a multiple of 256 = 256 FFN units from intermediate_size=128.
    torch.manual_seed(0)
    config = T.Lfm2Config(vocab_size=100, hidden_size=32, intermediate_size=128, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                          layer_types=["full_attention", "conv"])
    model = T.Lfm2ForCausalLM(config)
    assert model.model.layers[0].feed_forward.w1.out_features == 256
    result, loaded = _round_trip(model, token_inputs(), tmp_path)
    assert loaded.config.block_auto_adjust_ff_dim is False
    assert loaded.config.intermediate_size == 128
    assert {layer.feed_forward.w1.out_features for layer in loaded.model.layers} == {128}

"""input_width_heads.Probe: which Hugging Face blocks run only with heads x head_dim = their input width."""

import pytest
import torch

T = pytest.importorskip("transformers")

from shrink.layers import input_width_heads  # noqa: E402


def _led():
    torch.manual_seed(0)
    config = T.LEDConfig(vocab_size=64, d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=4,
                         decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, attention_window=[4],
                         max_encoder_position_embeddings=64, max_decoder_position_embeddings=64)
    model = T.LEDForConditionalGeneration(config).eval()
    ids = torch.randint(3, 64, (1, 8))
    return model, {"input_ids": ids, "decoder_input_ids": ids[:, :4]}


def _probe(model, inputs):
    probe = input_width_heads.Probe(model)
    with torch.no_grad():
        model(**inputs)
    probe.close()
    return probe


def test_led_blocks_that_reshape_to_their_input_width_are_found_with_a_cache_and_an_outer_projection():
    # The decoder's attention is re-run with the key/value cache the real forward already filled: that
    # cache (old widths) made every re-run fail, so the probe saw a block that breaks either way.
    # The encoder's Longformer attention has its output projection outside it and asserts embed_dim.
    model, inputs = _led()
    probe = _probe(model, inputs)
    names = {b.name for b in probe.blocks}
    assert "led.encoder.layers.0.self_attn.longformer_self_attn" in names
    assert probe.tied == {"led.encoder.layers.0.self_attn.longformer_self_attn", "led.decoder.layers.0.self_attn",
                          "led.decoder.layers.0.encoder_attn"}


def test_longformer_global_projections_make_the_same_heads_as_the_query():
    from shrink.layers import attention

    model, _ = _led()
    block = next(b for b in attention.find_blocks(model) if b.name.endswith("longformer_self_attn"))
    module = block.module
    assert block.queries == [module.query_global, module.key_global, module.value_global]
    cut = {id(layer): removed for layer, dim, removed in attention.cuts(block, [1]) if dim == "out"}
    assert cut[id(module.key_global)] == cut[id(module.key)] == list(range(8, 16))


def test_bert_self_attention_is_not_probed():
    # Its output projection lies outside it and it stores no input width: a head fewer is simply narrower.
    torch.manual_seed(0)
    config = T.BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                          intermediate_size=64)
    model = T.BertModel(config).eval()
    probe = _probe(model, {"input_ids": torch.randint(0, 64, (1, 8))})
    assert probe.blocks == [] and probe.tied == set()

"""Composite Hugging Face models keep ``use_cache`` in sub-configs: their export has no cache object."""

from __future__ import annotations

import pytest
import torch

import shrink
from shrink.deploy import export

transformers = pytest.importorskip("transformers")
T = transformers


def _bert2bert():
    small = dict(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                 max_position_embeddings=32)
    config = T.EncoderDecoderConfig.from_encoder_decoder_configs(T.BertConfig(**small),
                                                                 T.BertConfig(**small, is_decoder=True,
                                                                              add_cross_attention=True))
    config.decoder_start_token_id, config.pad_token_id = 1, 0
    torch.manual_seed(0)
    return T.EncoderDecoderModel(config=config).eval()


def test_no_cache_switches_off_the_sub_configs_and_puts_them_back():
    model = _bert2bert()
    assert model.config.decoder.use_cache is True
    with export._no_cache(model) as notes:
        assert model.config.decoder.use_cache is False
        assert notes and "use_cache=False" in notes[0]
    assert model.config.decoder.use_cache is True


def test_an_encoder_decoder_exports_with_parity(tmp_path):
    model = _bert2bert()
    x = {"input_ids": torch.randint(2, 64, (1, 6)), "decoder_input_ids": torch.randint(2, 64, (1, 4))}
    rep = shrink.export_onnx(model, x, tmp_path / "m.onnx")
    assert rep.max_abs_diff < 1e-4
    assert model.config.decoder.use_cache is True

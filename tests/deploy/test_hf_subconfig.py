"""A task model whose config nests its widths in a sub-config (CLIP's image classifier reads
``config.vision_config``): the widths are read and written there, and a layer computed beside the
logits and never returned (the vision tower's post_layernorm on the pooled token) is cut with the
width it reads. CLIP's image classifier used to keep everything whole ("the Hugging Face config
has no field for this width")."""

from __future__ import annotations

import torch

import shrink
from hf_models import transformers as T
from shrink.layers import hf_config


def _clip():
    vision = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, image_size=32,
                  patch_size=8)
    text = dict(hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4, vocab_size=100)
    return T.CLIPForImageClassification(T.CLIPConfig(vision_config=vision, text_config=text, num_labels=3))


def test_the_vision_config_is_the_view_of_an_image_classifier():
    assert hf_config.view(_clip()) == "vision_config"
    assert hf_config.view(T.BertModel(T.BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                                                   intermediate_size=64))) is None


def test_clip_image_classifier_compresses_and_reloads_identical(tmp_path):
    torch.manual_seed(0)
    model = _clip().eval()
    x = {"pixel_values": torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))}
    result = shrink.compress(model, x, ratio=0.5)
    assert result.after.params < 0.6 * result.before.params, result.kept_whole
    vision = result.model.config.vision_config
    assert vision.hidden_size < 64 and result.model.config.text_config.hidden_size == 48  # the tower it has
    assert result.model.vision_model.post_layernorm.normalized_shape == (vision.hidden_size,)
    loaded = type(model).from_pretrained(shrink.save_pretrained(result, tmp_path / "o")).eval()
    with torch.no_grad():
        want, got = result.model(**x).logits, loaded(**x).logits
    assert want.shape == (2, 3)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)

"""Uniform widths survive self-healing: a kind kept whole in one layer is kept whole in every layer."""

from __future__ import annotations

import pytest
import torch

import shrink
from hf_models import FAMILIES, transformers
from shrink.layers import hf_config


def _pin_width(layer: torch.nn.Module, width: int) -> None:
    """Model code that reads a stored width: cutting the FFN of this one layer breaks the model."""

    def pin(_module, args):
        if args[0].shape[-1] != width:
            raise RuntimeError(f"expects {width} features, got {args[0].shape[-1]}")

    layer.register_forward_pre_hook(pin)


def test_ffn_kept_whole_in_one_layer_is_kept_whole_in_all_and_round_trips(tmp_path):
    factory, inputs = FAMILIES["llama"]
    torch.manual_seed(0)
    model, x = factory(), inputs()
    _pin_width(model.model.layers[0].mlp.down_proj, 64)
    result = shrink.compress(model, x, ratio=0.5)
    layers = result.model.model.layers
    assert [layer.mlp.up_proj.out_features for layer in layers] == [64, 64]
    assert result.model.config.intermediate_size == 64
    assert "uniform=True" in result.kept_whole["model.layers.1.mlp.up_proj"]
    assert "model.layers.0.mlp" in result.kept_whole["model.layers.1.mlp.up_proj"]
    assert result.plan.kept_whole == result.kept_whole
    # The heads are cut in every layer all the same.
    assert result.model.config.num_attention_heads == 4 and result.after.params < result.before.params
    assert hf_config.check(result.model) == []
    loaded = transformers.AutoModelForCausalLM.from_pretrained(shrink.save_pretrained(result, tmp_path / "o")).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(**x).logits, result.model(**x).logits, rtol=0, atol=0)


def test_non_uniform_healing_still_cuts_the_other_layers():
    factory, inputs = FAMILIES["llama"]
    model, x = factory(), inputs()
    _pin_width(model.model.layers[0].mlp.down_proj, 64)
    result = shrink.compress(model, x, ratio=0.5, uniform=False)
    assert [layer.mlp.up_proj.out_features for layer in result.model.model.layers] == [64, 32]
    with pytest.raises(shrink.ShrinkValueError, match="uniform=True"):
        shrink.save_pretrained(result, "unused-folder-never-written")

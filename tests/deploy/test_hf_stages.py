"""Widths a Hugging Face config states per stage (layers/hf_lists.py): each list entry is cut, the
widths derived from it follow exactly, the lists are written back and the folder reloads identical.

ResNet's bottleneck inner width is hidden_sizes[i] // 4 and ConvNeXt's MLP is 4 x hidden_sizes[i]:
no field states them, so one width for the whole model used to keep all of them whole (1.0x)."""

from __future__ import annotations

import pytest
import torch

import shrink
from hf_models import transformers as T
from shrink.layers import hf_lists


def _resnet():  # embedding_size == hidden_sizes[0]: an identity shortcut joins the stem and stage 0
    return T.ResNetForImageClassification(T.ResNetConfig(embedding_size=16, hidden_sizes=[16, 32, 48, 64],
                                                         depths=[1, 2, 1, 1], num_labels=5))


def _convnext():
    return T.ConvNextForImageClassification(T.ConvNextConfig(hidden_sizes=[16, 32, 48, 64], depths=[1, 2, 1, 1],
                                                             num_labels=5))


STAGED = {"resnet": (_resnet, T.AutoModelForImageClassification), "convnext": (_convnext, T.AutoModelForImageClassification)}


@pytest.mark.parametrize("name", sorted(STAGED))
def test_stage_widths_are_cut_written_back_and_reload_identical(name, tmp_path):
    factory, auto = STAGED[name]
    torch.manual_seed(0)
    model = factory().eval()
    x = {"pixel_values": torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))}
    result = shrink.compress(model, x, ratio=0.5)
    assert result.after.params < 0.5 * result.before.params
    sizes = result.model.config.hidden_sizes
    assert all(new < old for new, old in zip(sizes, [16, 32, 48, 64])), sizes
    if name == "resnet":  # the stem follows stage 0 (the identity shortcut adds them)
        assert result.model.config.embedding_size == sizes[0]
        inner = result.model.resnet.encoder.stages[1].layers[0].layer[0].convolution.out_channels
        assert inner == sizes[1] // 4
    else:
        assert result.model.convnext.encoder.stages[1].layers[0].pwconv1.out_features == 4 * sizes[1]
    loaded = auto.from_pretrained(shrink.save_pretrained(result, tmp_path / "o")).eval()
    with torch.no_grad():
        want, got = result.model(**x).logits, loaded(**x).logits
    assert want.shape == (2, 5)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_governed_lists_each_entry_with_the_tensors_it_sets():
    model = _convnext().eval()
    found = hf_lists.governed(model)
    assert set(found) == {("hidden_sizes", i) for i in range(4)}
    # stage 1's MLP widths come from hidden_sizes[1] only (dim 0 of fc1's rows, dim 1 of fc2's)
    assert found[("hidden_sizes", 1)]["convnext.encoder.stages.1.layers.0.pwconv1.weight"] == (0, 1)
    assert "convnext.encoder.stages.1.layers.0.pwconv1.weight" not in found[("hidden_sizes", 2)]


def test_write_back_finds_the_values_the_shapes_show():
    model = _resnet().eval()
    x = {"pixel_values": torch.randn(1, 3, 32, 32)}
    result = shrink.compress(model, x, ratio=0.5)
    cut = result.model
    kept = list(cut.config.hidden_sizes)
    cut.config.hidden_sizes = [16, 32, 48, 64]  # as the uncut config says
    hf_lists.write_back(cut)
    assert list(cut.config.hidden_sizes) == kept


def _efficientnet():
    # b0's layout at a quarter of its widths and half its depth; the stem is round_filters(32) and
    # the top conv round_filters(1280) whatever the lists say (only width_coefficient sets them)
    return T.EfficientNetForImageClassification(T.EfficientNetConfig(
        width_coefficient=0.25, depth_coefficient=0.5, image_size=32, hidden_dim=320, num_labels=5))


def test_efficientnet_stage_lists_are_units_and_depth_coefficient_is_no_width():
    model = _efficientnet().eval()
    found = hf_lists.governed(model)
    assert ("depth_coefficient", None) not in found  # it changes the block count, not a width
    # width_coefficient scales widths that in_channels/out_channels state per stage: those are the units
    assert ("width_coefficient", None) not in found
    assert len([e for e in found if e[0] in ("in_channels", "out_channels")]) >= 4


def test_efficientnet_compresses_by_stage_and_reloads_identical(tmp_path):
    torch.manual_seed(0)
    model = _efficientnet().eval()
    x = {"pixel_values": torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))}
    result = shrink.compress(model, x, ratio=0.5)
    assert result.after.params < 0.67 * result.before.params
    stem = result.model.efficientnet.embeddings.convolution.out_channels
    assert stem == model.efficientnet.embeddings.convolution.out_channels  # no config value can narrow it
    assert list(result.model.config.out_channels) != list(model.config.out_channels)
    loaded = T.AutoModelForImageClassification.from_pretrained(shrink.save_pretrained(result, tmp_path / "o")).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(**x).logits, result.model(**x).logits, rtol=1e-5, atol=1e-6)


def _segformer():  # head_dim 16 in every stage; stage 0's one head cannot be cut
    return T.SegformerForImageClassification(T.SegformerConfig(
        hidden_sizes=[16, 32, 80, 128], num_attention_heads=[1, 2, 5, 8], depths=[2, 2, 2, 2],
        decoder_hidden_size=64, num_labels=5))


def _glpn():  # checks hidden_sizes[i] % num_attention_heads[i] when built
    return T.GLPNForDepthEstimation(T.GLPNConfig(
        hidden_sizes=[16, 32, 80, 128], num_attention_heads=[1, 2, 5, 8], depths=[2, 2, 2, 2],
        decoder_hidden_size=32))


def _pvt():  # each stage's patch embedding stores num_channels and raises on another width
    return T.PvtForImageClassification(T.PvtConfig(
        hidden_sizes=[16, 32, 80, 128], num_attention_heads=[1, 2, 5, 8], depths=[2, 2, 2, 2],
        num_labels=5, image_size=64))


def _pvt_v2():  # the context is reshaped to the input width; the keys read a reducing conv and a norm
    return T.PvtV2ForImageClassification(T.PvtV2Config(
        hidden_sizes=[16, 32, 80, 128], num_attention_heads=[1, 2, 5, 8], depths=[2, 2, 2, 2], num_labels=5))


@pytest.mark.parametrize("factory", [_segformer, _glpn, _pvt, _pvt_v2], ids=["segformer", "glpn", "pvt", "pvt_v2"])
def test_stage_width_and_heads_are_cut_as_one_unit_head_dim_kept(factory, tmp_path):
    # hidden_sizes[i] sets the stage's residual width, its FFN (x mlp_ratios[i]), its sequence
    # reduction and q/k/v: the stage loses whole heads and its width follows, heads x 16.
    torch.manual_seed(0)
    model = factory().eval()
    x = {"pixel_values": torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))}
    result = shrink.compress(model, x, ratio=0.5)
    assert result.after.params < 0.6 * result.before.params, result.kept_whole
    config = result.model.config
    assert config.hidden_sizes[0] == 16 and config.num_attention_heads[0] == 1
    assert [h // n for h, n in zip(config.hidden_sizes, config.num_attention_heads)] == [16] * 4
    assert config.hidden_sizes[3] < 128
    encoder = result.model.base_model
    attention = [m for _, m in encoder.named_modules() if hasattr(m, "num_attention_heads")]
    assert {getattr(m, "attention_head_size", getattr(m, "head_dim", None)) for m in attention} == {16}
    loaded = type(model).from_pretrained(shrink.save_pretrained(result, tmp_path / "o")).eval()
    assert loaded.config.num_attention_heads == config.num_attention_heads
    with torch.no_grad():
        want, got = result.model(**x), loaded(**x)
    key = "logits" if hasattr(want, "logits") else "predicted_depth"
    assert getattr(want, key).shape == getattr(model(**x), key).shape
    torch.testing.assert_close(getattr(got, key), getattr(want, key), rtol=1e-5, atol=1e-6)

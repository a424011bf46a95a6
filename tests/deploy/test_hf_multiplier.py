"""A config that scales every width by one float (MobileNet's depth_multiplier): the multiplier is
the unit the config describes, so the whole network loses one fraction, every width is what the
config builds with the new multiplier (rounded to multiples of 8 as the family does), and the
value is written back. It used to stay whole (1.0x): no field states any single width."""

from __future__ import annotations

import pytest
import torch

import shrink
from hf_models import transformers as T


def _v1():
    return T.MobileNetV1ForImageClassification(T.MobileNetV1Config(image_size=32, depth_multiplier=0.5, num_labels=5))


def _v2():
    return T.MobileNetV2ForImageClassification(T.MobileNetV2Config(image_size=32, depth_multiplier=0.5, num_labels=5))


@pytest.mark.parametrize("factory", [_v1, _v2], ids=["mobilenet_v1", "mobilenet_v2"])
def test_a_width_multiplier_is_cut_written_back_and_reloads_identical(factory, tmp_path):
    torch.manual_seed(0)
    model = factory().eval()
    for m in model.modules():  # trained-like scales: the config's init (std 0.02) makes logits of 1e-25
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
            torch.nn.init.kaiming_normal_(m.weight)
    x = {"pixel_values": torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))}
    result = shrink.compress(model, x, ratio=0.5)
    assert result.after.params < 0.7 * result.before.params, result.kept_whole
    assert result.model.config.depth_multiplier < 0.5
    loaded = type(model).from_pretrained(shrink.save_pretrained(result, tmp_path / "o")).eval()
    with torch.no_grad():
        want, got = result.model(**x).logits, loaded(**x).logits
    assert want.shape == (2, 5) and want.abs().max() > 1e-3
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)

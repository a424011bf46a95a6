"""torchvision-style ViT: hidden width cut with class token, position embedding and `hidden_dim`."""

from __future__ import annotations

import torch

import shrink
from real_models import TorchvisionViT


def test_hidden_width_cut_with_its_parameters_and_attribute():
    model = TorchvisionViT().eval()
    x = torch.randn(2, 3, 16, 16)
    result = shrink.compress(model, x, ratio=0.5)
    vit = result.model
    width = vit.conv_proj.out_channels
    assert width == 16
    assert vit.hidden_dim == width  # x.reshape(n, self.hidden_dim, n_h * n_w) reads it
    assert vit.class_token.shape == (1, 1, width)
    assert vit.encoder.pos_embedding.shape == (1, 17, width)
    assert vit.encoder.layers[0].self_attention.embed_dim == width
    assert vit(torch.randn(3, 3, 16, 16)).shape == (3, 10)


def test_kept_channels_of_the_class_token_are_the_conv_s():
    model = TorchvisionViT().eval()
    result = shrink.compress(model, torch.randn(2, 3, 16, 16), ratio=0.5)
    kept = result.plan.kept["conv_proj"]["out"]
    assert torch.equal(result.model.class_token, model.class_token[..., kept])
    assert torch.equal(result.model.encoder.pos_embedding, model.encoder.pos_embedding[..., kept])

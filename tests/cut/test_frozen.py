"""A model fine-tuned with frozen layers (a new head on a frozen backbone) compresses like any other,
and what was frozen stays frozen."""

from __future__ import annotations

import torch

import shrink
from hf_models import llama, token_inputs
from models import TinyMLP


def test_a_frozen_language_model_is_cut_and_stays_frozen():
    torch.manual_seed(0)
    model = llama()
    model.requires_grad_(False)  # the embedding that starts the graph requires no grad
    result = shrink.compress(model, token_inputs(), ratio=0.5)
    assert result.after.params < 0.5 * result.before.params
    assert not any(p.requires_grad for p in result.model.parameters())


def test_a_frozen_backbone_with_a_trainable_head_keeps_each_flag():
    torch.manual_seed(0)
    model = TinyMLP((16, 64, 64, 4)).eval()
    for p in model.net[0].parameters():
        p.requires_grad_(False)
    flags = {name: p.requires_grad for name, p in model.named_parameters()}
    result = shrink.compress(model, torch.randn(2, 16), ratio=0.5)
    assert result.model.net[0].out_features == 32
    assert {name: p.requires_grad for name, p in result.model.named_parameters()} == flags
    assert {name: p.requires_grad for name, p in model.named_parameters()} == flags  # the caller's too

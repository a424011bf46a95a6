"""Position tables held as buffers (word-language-model PositionalEncoding) follow the embedding width."""

from __future__ import annotations

import torch
from torch import nn

import shrink
from oracle import assert_matches_oracle
from real_models import PositionalEncoding, TransformerModel, _tokens


class EmbedPE(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb, self.pos, self.dec = nn.Embedding(50, 16), PositionalEncoding(16, dropout=0.0), nn.Linear(16, 50)

    def forward(self, src):
        return self.dec(torch.relu(self.pos(self.emb(src))))


def test_table_is_cut_with_the_embedding_and_stays_a_buffer():
    model = EmbedPE().eval()
    x = _tokens((6, 2))
    result = shrink.compress(model, x, ratio=0.5)
    pos = result.model.pos
    kept = result.plan.kept["emb"]["out"]
    assert "pe" in dict(pos.named_buffers()) and "pe" not in dict(pos.named_parameters())
    assert torch.equal(pos.pe, model.pos.pe[..., kept])
    assert set(result.model.state_dict()) == set(model.state_dict())
    assert_matches_oracle(model, result, x)


def test_tracing_leaves_the_user_model_as_it_was():
    model = TransformerModel().eval()
    shrink.analyze(model, _tokens((10, 2)))
    assert "pe" in dict(model.pos_encoder.named_buffers())
    assert "pos_encoder.pe" not in dict(model.named_parameters())


def test_transformer_encoder_layer_is_cut_and_out_proj_is_not_unsupported():
    model = TransformerModel().eval()
    x = _tokens((10, 2))
    report = shrink.analyze(model, x)
    assert not any("out_proj" in name for name, _ in report.kept_whole)
    result = shrink.compress(model, x)
    layer = result.model.transformer_encoder.layers[0]
    assert layer.self_attn.embed_dim == 16 and layer.self_attn.out_proj.in_features == 16
    assert layer.linear1.out_features == 32
    assert result.model(x).shape == (10, 2, 50)

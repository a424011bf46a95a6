"""Task heads that share a tensor with the body, and task models that return hidden states beside
their logits: masked-LM heads tied to the word embeddings, seq2seq models (BART, T5) whose
encoder_last_hidden_state is an output, DINOv2's classifier over a class token and mean patch.

Each used to keep its hidden width whole (0.82x-0.83x of the parameters for BERT's masked LM and
BART, 1.0x for DINOv2); now the width is cut, the folder reloads identical and the logits keep
their shape."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import shrink
from hf_models import transformers as T
from shrink.cut import graph

_S = dict(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
          max_position_embeddings=64)


def _tokens(seq=8):
    return torch.randint(3, 90, (2, seq), generator=torch.Generator().manual_seed(1))


def _bert_mlm():
    return T.BertForMaskedLM(T.BertConfig(**_S)), {"input_ids": _tokens()}


def _roberta_mlm():
    return T.RobertaForMaskedLM(T.RobertaConfig(pad_token_id=1, **_S)), {"input_ids": _tokens()}


def _bart():
    config = T.BartConfig(vocab_size=100, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
                          decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=64)
    return T.BartForConditionalGeneration(config), {"input_ids": _tokens(), "decoder_input_ids": _tokens(4)}


def _t5():  # tied head: the decoder output is scaled by model_dim ** -0.5, an int set from d_model
    config = T.T5Config(vocab_size=100, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4)
    return T.T5ForConditionalGeneration(config), {"input_ids": _tokens(), "decoder_input_ids": _tokens(4)}


def _dinov2():
    config = T.Dinov2Config(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                            num_labels=5)
    return T.Dinov2ForImageClassification(config), {"pixel_values": torch.randn(2, 3, 32, 32)}


MODELS = {"bert_mlm": _bert_mlm, "roberta_mlm": _roberta_mlm, "bart": _bart, "t5": _t5, "dinov2": _dinov2}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_the_hidden_width_is_cut_and_the_folder_reloads_identical(name, tmp_path):
    torch.manual_seed(0)
    model, x = MODELS[name]()
    model.eval()
    result = shrink.compress(model, x, ratio=0.5)
    assert result.after.params < 0.5 * result.before.params, result.kept_whole
    loaded = type(model).from_pretrained(shrink.save_pretrained(result, tmp_path / "o")).eval()
    with torch.no_grad():
        want, got, dense = result.model(**x).logits, loaded(**x).logits, model(**x).logits
    assert want.shape == dense.shape  # the head's outputs are never narrowed
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_a_masked_lm_decoder_tied_to_the_embeddings_loses_the_same_columns():
    model, x = _bert_mlm()
    model.eval()
    traced = graph.trace(model, x)
    hidden = next(g for g in traced.groups if g.has("bert.embeddings.word_embeddings", "out"))
    # the head's transform width is a group of its own, linked through the tied decoder weight
    assert any(f.has("cls.predictions.decoder", "in") for f in hidden.followers)
    result = shrink.compress(model, x, ratio=0.5)
    cut = result.model
    assert cut.cls.predictions.decoder.weight is cut.bert.embeddings.word_embeddings.weight
    assert cut.cls.predictions.transform.dense.out_features == cut.config.hidden_size < 32


def test_seq2seq_logits_keep_their_shape_while_encoder_states_narrow():
    model, x = _bart()
    model.eval()
    result = shrink.compress(model, x, ratio=0.5)
    with torch.no_grad():
        out = result.model(**x)
    assert out.encoder_last_hidden_state.shape[-1] == result.model.config.d_model < 32


class ClassTokenHead(nn.Module):
    """A class token prepended with cat(dim=1), then a head over cat([cls, mean of patches])."""

    def __init__(self) -> None:
        super().__init__()
        self.embed, self.cls = nn.Linear(8, 16), nn.Parameter(torch.randn(1, 1, 16))
        self.fc1, self.fc2, self.norm = nn.Linear(16, 32), nn.Linear(32, 16), nn.LayerNorm(16)
        self.head = nn.Linear(32, 3)

    def forward(self, x):
        h = torch.cat((self.cls.expand(x.shape[0], -1, -1), self.embed(x)), dim=1)
        h = self.norm(h + self.fc2(torch.relu(self.fc1(h))))
        return self.head(torch.cat([h[:, 0], h[:, 1:].mean(dim=1)], dim=1))


def test_a_token_concatenation_keeps_channel_indices_and_the_head_concat_is_mapped():
    model, x = ClassTokenHead().eval(), torch.randn(2, 5, 8)
    traced = graph.trace(model, x)
    group = next(g for g in traced.groups if g.has("head", "in"))
    pruner = traced.dg.get_pruner_of_module(group.root)
    items = traced.dg.get_pruning_group(group.root, pruner.prune_out_channels, [0, 1])
    assert [list(i.idxs) for i in items if i.dep.target.module is model.head] == [[0, 1, 16, 17]]
    result = shrink.compress(model, x, ratio=0.5)
    assert result.model.head.in_features == 2 * result.model.norm.normalized_shape[0] < 32
    assert "cls" not in str(result.kept_whole) and result.model(x).shape == (2, 3)

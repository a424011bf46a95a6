"""Fine-tuned classifiers: a task head's inner width follows the hidden cut, the folder reads back."""

from __future__ import annotations

import pytest
import torch

import shrink
from hf_models import transformers as T

_SIZES = dict(vocab_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
              max_position_embeddings=64, num_labels=3)


def _bert():
    return T.BertForSequenceClassification(T.BertConfig(hidden_size=32, **_SIZES))


def _roberta():
    return T.RobertaForSequenceClassification(T.RobertaConfig(hidden_size=32, pad_token_id=1, **_SIZES))


def _distilbert():
    return T.DistilBertForSequenceClassification(
        T.DistilBertConfig(vocab_size=64, dim=32, n_layers=2, n_heads=4, hidden_dim=64, max_position_embeddings=64,
                           num_labels=3))


def _electra():  # embedding_size == hidden_size: no projection, the embeddings are the hidden width
    return T.ElectraForSequenceClassification(T.ElectraConfig(hidden_size=32, embedding_size=32, **_SIZES))


HEADS = {"bert": (_bert, "bert.pooler.dense"), "roberta": (_roberta, "classifier.dense"),
         "distilbert": (_distilbert, "pre_classifier"), "electra": (_electra, "classifier.dense")}


@pytest.mark.parametrize("name", sorted(HEADS))
def test_a_sequence_classifier_compresses_saves_and_reloads_identical(name, tmp_path):
    factory, inner = HEADS[name]
    torch.manual_seed(0)
    model = factory().eval()
    x = {"input_ids": torch.randint(3, 64, (2, 8), generator=torch.Generator().manual_seed(1)),
         "attention_mask": torch.ones(2, 8, dtype=torch.long)}
    result = shrink.compress(model, x, ratio=0.5)
    assert result.after.params < 0.5 * result.before.params
    head = result.model.get_submodule(inner)
    hidden = result.model.config.hidden_size if name != "distilbert" else result.model.config.dim
    assert head.out_features == head.in_features == hidden < 32  # followed the hidden cut
    loaded = T.AutoModelForSequenceClassification.from_pretrained(shrink.save_pretrained(result, tmp_path / "o"))
    with torch.no_grad():
        want, got = result.model(**x).logits, loaded.eval()(**x).logits
    assert want.shape == (2, 3)  # the head's outputs are never narrowed
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_mobilevit_stages_of_several_widths_keep_their_heads_and_save(tmp_path):
    # One num_attention_heads for stages of widths 32/40/48: the head size is each stage's width /
    # heads, so cutting heads without the width leaves a model no config describes (was refused).
    config = T.MobileViTConfig(image_size=64, hidden_sizes=[32, 40, 48], neck_hidden_sizes=[8, 8, 16, 16, 24, 32, 64],
                               num_labels=3)
    torch.manual_seed(0)
    model = T.MobileViTForImageClassification(config).eval()
    x = {"pixel_values": torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))}
    result = shrink.compress(model, x, ratio=0.5)
    assert result.after.params < 0.9 * result.before.params
    assert result.model.config.num_attention_heads == 4 and result.model.config.mlp_ratio < 2.0
    loaded = T.AutoModelForImageClassification.from_pretrained(shrink.save_pretrained(result, tmp_path / "o"))
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(**x).logits, result.model(**x).logits, rtol=1e-5, atol=1e-5)


def test_electra_keeps_its_embedding_projection_describable(tmp_path):
    # hidden 64 projected from embeddings of 32: a cut to exactly 32 would leave a projection the
    # config no longer builds (it builds embeddings_project only while the sizes differ)
    config = T.ElectraConfig(vocab_size=64, hidden_size=64, embedding_size=32, num_hidden_layers=2,
                             num_attention_heads=4, intermediate_size=128, max_position_embeddings=64, num_labels=3)
    torch.manual_seed(0)
    model = T.ElectraForSequenceClassification(config).eval()
    x = {"input_ids": torch.randint(3, 64, (2, 8), generator=torch.Generator().manual_seed(1))}
    result = shrink.compress(model, x, ratio=0.5)
    assert result.model.config.hidden_size not in (32, 64) and result.after.params < result.before.params
    loaded = T.AutoModelForSequenceClassification.from_pretrained(shrink.save_pretrained(result, tmp_path / "o"))
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(**x).logits, result.model(**x).logits, rtol=1e-5, atol=1e-6)


def test_an_ffn_the_config_builds_as_a_multiple_of_the_hidden_size_follows_it(tmp_path):
    # XLM/FlauBERT: the FFN is always 4 x emb_dim (no field of its own); hidden_size maps to emb_dim
    config = T.XLMConfig(vocab_size=64, emb_dim=64, n_layers=2, n_heads=4, max_position_embeddings=64, num_labels=3)
    torch.manual_seed(0)
    model = T.XLMForSequenceClassification(config).eval()
    x = {"input_ids": torch.randint(3, 64, (2, 8), generator=torch.Generator().manual_seed(1))}
    result = shrink.compress(model, x, ratio=0.5)
    hidden = result.model.config.emb_dim
    assert hidden < 64 and result.model.transformer.ffns[0].lin1.out_features == 4 * hidden
    loaded = T.AutoModelForSequenceClassification.from_pretrained(shrink.save_pretrained(result, tmp_path / "o"))
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(**x).logits, result.model(**x).logits, rtol=1e-5, atol=1e-6)

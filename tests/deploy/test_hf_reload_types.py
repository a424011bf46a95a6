"""Hugging Face families whose save_pretrained folder did not read itself back (issue 18's sweep)."""

from __future__ import annotations

import pytest
import torch

import shrink
from shrink._util import inputs as _inputs
from hf_models import seq2seq_inputs, token_inputs, transformers

T = transformers


def _round_trip(model, x, tmp_path, *, output="logits"):
    """Compress at defaults, save, reload: the reloaded model gives the compressed model's outputs."""
    result = shrink.compress(model.eval(), x, ratio=0.5)
    folder = shrink.save_pretrained(result, tmp_path / "out")
    loaded = type(model).from_pretrained(folder).eval()
    with torch.no_grad():
        torch.testing.assert_close(getattr(loaded(**x), output), getattr(result.model(**x), output),
                                   rtol=1e-5, atol=1e-5)
    assert result.after.params < 0.8 * result.before.params, result.kept_whole
    return result, loaded


def test_lfm2_ffn_width_is_written_with_auto_adjust_off(tmp_path):
    # LFM2 builds int(2 * 128 / 3) rounded up to a multiple of 256 = 256 FFN units from intermediate_size=128.
    torch.manual_seed(0)
    config = T.Lfm2Config(vocab_size=100, hidden_size=32, intermediate_size=128, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                          layer_types=["full_attention", "conv"])
    model = T.Lfm2ForCausalLM(config)
    assert model.model.layers[0].feed_forward.w1.out_features == 256
    result, loaded = _round_trip(model, token_inputs(), tmp_path)
    assert loaded.config.block_auto_adjust_ff_dim is False
    assert loaded.config.intermediate_size == 128
    assert {layer.feed_forward.w1.out_features for layer in loaded.model.layers} == {128}


def _luke():
    torch.manual_seed(0)
    config = T.LukeConfig(vocab_size=100, entity_vocab_size=10, entity_emb_size=16, hidden_size=32,
                          num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                          max_position_embeddings=64, num_labels=3)
    return T.LukeForSequenceClassification(config).eval()


def _entities():
    return {"entity_ids": torch.tensor([[1, 2]]), "entity_attention_mask": torch.ones(1, 2, dtype=torch.long),
            "entity_position_ids": torch.tensor([[[0, 1, -1], [3, -1, -1]]])}


def test_luke_entity_queries_are_cut_with_the_word_query_when_no_entities_are_passed(tmp_path):
    # Without entity inputs the forward never runs w2e/e2w/e2e_query: they follow `query` all the same.
    model, x = _luke(), token_inputs()
    result, loaded = _round_trip(model, x, tmp_path)
    kept = result.plan.kept
    for i in range(2):
        name = f"luke.encoder.layer.{i}.attention.self"
        rows, columns = kept[f"{name}.query"]["out"], kept[f"{name}.query"]["in"]
        for query in ("w2e_query", "e2w_query", "e2e_query"):
            assert kept[f"{name}.{query}"] == {"out": rows, "in": columns}
            torch.testing.assert_close(result.model.get_submodule(f"{name}.{query}").weight,
                                       model.get_submodule(f"{name}.{query}").weight[rows][:, columns])
    with torch.no_grad():  # entity-aware attention reads them: the reloaded model agrees there too
        torch.testing.assert_close(loaded(**x, **_entities()).logits, result.model(**x, **_entities()).logits,
                                   rtol=1e-5, atol=1e-5)


def test_luke_entity_queries_lose_the_heads_query_loses_when_entities_are_passed(tmp_path):
    # Traced with entities, a heads cut that left them whole broke the reshape to [batch, seq, heads, head_dim].
    result, _ = _round_trip(_luke(), {**token_inputs(), **_entities()}, tmp_path)
    assert not any("attention.self" in k for k in result.kept_whole), result.kept_whole


def test_fsmt_heads_are_cut_with_the_hidden_width_its_attention_reshapes_to(tmp_path):
    # FSMT's attention asserts its input is embed_dim wide and views the heads back to that width:
    # heads and d_model are cut in one pass (each alone breaks it), and the encoder's and decoder's
    # embed_scale = sqrt(d_model) is folded into the embeddings.
    torch.manual_seed(0)
    config = T.FSMTConfig(langs=["en", "de"], src_vocab_size=100, tgt_vocab_size=100, d_model=32,
                          encoder_layers=2, decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4,
                          encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=64, scale_embedding=True)
    model = T.FSMTForConditionalGeneration(config)
    result, loaded = _round_trip(model, seq2seq_inputs(), tmp_path)
    assert (loaded.config.d_model, loaded.config.encoder_attention_heads, loaded.config.decoder_ffn_dim) == (16, 2, 32)
    attention = result.model.model.encoder.layers[0].self_attn
    assert (attention.embed_dim, attention.num_heads, attention.head_dim) == (16, 2, 8)
    assert result.model.model.encoder.embed_scale == pytest.approx(16 ** 0.5)


def test_plbart_shared_scaled_table_is_folded_once_and_the_tied_head_keeps_its_logits(tmp_path):
    # shared, encoder.embed_tokens and decoder.embed_tokens are one table scaled by sqrt(d_model),
    # read by the tied lm_head; the post-LN decoder has no final norm but its last final_layer_norm.
    torch.manual_seed(0)
    config = T.PLBartConfig(vocab_size=100, d_model=32, encoder_layers=2, decoder_layers=2,
                            encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=64,
                            decoder_ffn_dim=64, max_position_embeddings=64, scale_embedding=True)
    model = T.PLBartForConditionalGeneration(config)
    result, loaded = _round_trip(model, seq2seq_inputs(), tmp_path)
    assert loaded.config.d_model == 16
    assert {m.embed_scale for m in (result.model.model.shared, result.model.model.encoder.embed_tokens)} == {4.0}


def test_sew_upsampling_folded_into_tokens_follows_the_hidden_cut(tmp_path):
    # SEW's upsampling is Linear(hidden, 2 x hidden) reshaped to twice the tokens: output channel j is
    # rows j and hidden + j. Left whole, the config (which builds it as 2 x hidden_size) no longer
    # described the model and save refused it. 1020 samples give 50 frames: no pad after the upsampling
    # (padding.py takes a pad of [batch, tokens, channels] over dim 1 for one over channels).
    torch.manual_seed(0)
    config = T.SEWConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                         conv_dim=(16, 16, 16), conv_kernel=(10, 3, 3), conv_stride=(5, 2, 2), squeeze_factor=2,
                         num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4, classifier_proj_size=32,
                         num_labels=3)
    model = T.SEWForSequenceClassification(config)
    x = {"input_values": torch.randn(1, 1020, generator=torch.Generator().manual_seed(0))}
    result, loaded = _round_trip(model, x, tmp_path)
    assert loaded.config.hidden_size == 16
    upsample = result.model.sew.encoder.upsample.projection
    assert (upsample.in_features, upsample.out_features) == (16, 32)
    rows = result.plan.kept["sew.encoder.upsample.projection"]["out"]
    assert rows[len(rows) // 2:] == [32 + r for r in rows[:len(rows) // 2]]  # rows j and 32 + j go together


def test_marian_sinusoid_the_class_does_not_save_keeps_its_width(tmp_path):
    # MarianMTModel lists embed_positions in _keys_to_ignore_on_save and rebuilds the sines at the
    # config's d_model on load: d_model stays whole (cut, the reload computed something else) and
    # the FFN is cut.
    torch.manual_seed(0)
    config = T.MarianConfig(vocab_size=100, d_model=32, encoder_layers=2, decoder_layers=2,
                            encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=128,
                            decoder_ffn_dim=128, max_position_embeddings=64, pad_token_id=1,
                            decoder_start_token_id=1)
    model = T.MarianMTModel(config)
    result, loaded = _round_trip(model, seq2seq_inputs(), tmp_path)
    assert result.model.model.encoder.embed_positions.weight.shape == (64, 32)
    assert any("_keys_to_ignore_on_save" in reason for reason in result.kept_whole.values()), result.kept_whole
    assert {layer.fc1.out_features for layer in loaded.model.encoder.layers} == {64}


def test_vit_mae_random_masking_is_compared_on_the_same_draws(tmp_path):
    # ViT-MAE masks a random 75% of patches in every forward: without one random state per run,
    # every cut looked like a mismatch (0% removed) and the read-back refused the folder.
    torch.manual_seed(0)
    config = T.ViTMAEConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                            image_size=32, patch_size=8)
    model = T.ViTMAEModel(config).eval()
    x = {"pixel_values": torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))}
    state = torch.random.get_rng_state()
    first, second = _inputs.run(model, x), _inputs.run(model, x)
    assert torch.equal(first.ids_restore, second.ids_restore)
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's random state is left as it was
    result = shrink.compress(model, x, ratio=0.5)
    assert result.after.params < 0.8 * result.before.params, result.kept_whole
    loaded = type(model).from_pretrained(shrink.save_pretrained(result, tmp_path / "out")).eval()
    with torch.no_grad():
        torch.manual_seed(3)
        want = result.model(**x)
        torch.manual_seed(3)
        got = loaded(**x)
    torch.testing.assert_close(got.last_hidden_state, want.last_hidden_state, rtol=1e-5, atol=1e-5)
    assert torch.equal(got.ids_restore, want.ids_restore)


_LONG = dict(vocab_size=100, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, attention_window=8)


@pytest.mark.parametrize("name", ["longformer", "led"])
def test_sliding_window_attention_scaling_its_queries_in_place_cuts_the_hidden_width(name, tmp_path):
    # Both run their query layer on a [seq, batch, width] view and divide it in place by
    # sqrt(head_dim): the tracer lost the layer and joined the residual width to the heads' rows,
    # so the hidden width was never cut (Longformer 14%, LED 3% removed, the FFN only).
    torch.manual_seed(0)
    if name == "longformer":
        model = T.LongformerForSequenceClassification(T.LongformerConfig(
            hidden_size=64, max_position_embeddings=64, num_labels=3, **_LONG))
        x, output = token_inputs(seq=16), "logits"
    else:
        model = T.LEDForConditionalGeneration(T.LEDConfig(
            d_model=64, encoder_layers=1, decoder_layers=1, encoder_attention_heads=4, decoder_attention_heads=4,
            encoder_ffn_dim=128, decoder_ffn_dim=128, max_encoder_position_embeddings=64,
            max_decoder_position_embeddings=64, vocab_size=100, attention_window=[8]))
        x, output = seq2seq_inputs(seq=16), "logits"
    result, loaded = _round_trip(model, x, tmp_path, output=output)
    assert result.after.params < 0.6 * result.before.params, result.kept_whole
    hidden = loaded.config.hidden_size if name == "longformer" else loaded.config.d_model
    assert hidden < 64


def test_a_model_wide_width_does_not_follow_a_head_layer_cut_alone(tmp_path):
    # MPNet's heads stay whole (one position-bias table for every layer, in the encoder), so its
    # hidden width does too; a trial's cut of classifier.dense alone once wrote hidden_size=32 and
    # the config then described nothing: the FFN was kept whole as well (0% removed).
    torch.manual_seed(0)
    model = T.MPNetForSequenceClassification(T.MPNetConfig(
        vocab_size=100, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
        max_position_embeddings=64, num_labels=3))
    result = shrink.compress(model.eval(), token_inputs(seq=16), ratio=0.5)
    assert result.model.config.hidden_size == 64
    assert result.model.config.intermediate_size < 128, result.kept_whole
    loaded = type(model).from_pretrained(shrink.save_pretrained(result, tmp_path / "out")).eval()
    x = token_inputs(seq=16)
    with torch.no_grad():
        torch.testing.assert_close(loaded(**x).logits, result.model(**x).logits, rtol=1e-5, atol=1e-5)

"""`save_pretrained` reads back what it wrote: a folder that computes something else is never handed over."""

from __future__ import annotations

import pytest
import torch

import shrink
from hf_models import HF_MODELS, transformers


def _compressed(name="llama"):
    factory, inputs = HF_MODELS[name]
    torch.manual_seed(0)
    return shrink.compress(factory().eval(), inputs(), ratio=0.5), inputs


def test_a_value_derived_from_the_config_that_changes_on_reload_is_caught(tmp_path):
    # A non-persistent buffer is rebuilt from the config by from_pretrained: in memory it says
    # one thing, in the folder another. The weights alone would pass any check.
    result, _ = _compressed()
    rotary = result.model.model.rotary_emb
    rotary.inv_freq.mul_(1.5)
    with pytest.raises(shrink.ShrinkValueError, match=r"model\.rotary_emb\.inv_freq changes on reload"):
        shrink.save_pretrained(result, tmp_path / "o")
    assert not (tmp_path / "o").exists()
    assert [p.name for p in tmp_path.iterdir()] == []  # no temporary folder left either


def test_a_config_field_that_disagrees_with_the_weights_is_caught(tmp_path):
    result, _ = _compressed("gpt2")
    result.model.config.layer_norm_epsilon = 0.5  # the modules in memory keep their own eps
    with pytest.raises(shrink.ShrinkValueError, match="computes something else"):
        shrink.save_pretrained(result, tmp_path / "o")
    assert not (tmp_path / "o").exists()


def test_a_consistent_folder_is_handed_over_and_reloads_identical(tmp_path):
    result, inputs = _compressed()
    folder = shrink.save_pretrained(result, tmp_path / "o")
    loaded = transformers.AutoModelForCausalLM.from_pretrained(folder).eval()
    with torch.no_grad():
        assert torch.equal(loaded(**inputs()).logits, result.model(**inputs()).logits)


def test_an_existing_empty_folder_is_written_into(tmp_path):
    result, _ = _compressed("gpt2")
    (tmp_path / "o").mkdir()
    folder = shrink.save_pretrained(result, tmp_path / "o")
    assert (folder / "config.json").is_file()


def test_a_folder_with_files_in_it_is_still_refused_without_overwrite(tmp_path):
    result, _ = _compressed("gpt2")
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "notes.txt").write_text("mine")
    with pytest.raises(shrink.ShrinkValueError, match="already exists.*overwrite=True"):
        shrink.save_pretrained(result, tmp_path / "o")
    assert (tmp_path / "o" / "notes.txt").read_text() == "mine"
    shrink.save_pretrained(result, tmp_path / "o", overwrite=True)
    assert not (tmp_path / "o" / "notes.txt").exists()


@pytest.mark.parametrize("family", ["gemma", "gemma2"])
def test_gemma_embedding_scale_is_folded_so_the_folder_reloads_identical(family, tmp_path):
    # Gemma multiplies token embeddings by sqrt(hidden_size), a buffer rebuilt from the config:
    # the cut folds old/new into the (tied) table and new/old into the final norm's 1 + weight.
    config = transformers.AutoConfig.for_model(family, vocab_size=64, hidden_size=32, intermediate_size=64,
                                               num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                               head_dim=8, max_position_embeddings=64)
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config).eval()
    x = {"input_ids": torch.randint(3, 64, (1, 8), generator=torch.Generator().manual_seed(1))}
    result = shrink.compress(model, x, ratio=0.5)
    assert result.model.config.hidden_size < 32 and result.model.config.tie_word_embeddings
    embed = result.model.model.embed_tokens
    assert float(embed.embed_scale) == pytest.approx(result.model.config.hidden_size ** 0.5)
    loaded = transformers.AutoModelForCausalLM.from_pretrained(shrink.save_pretrained(result, tmp_path / "o")).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(**x).logits, result.model(**x).logits, rtol=1e-5, atol=1e-5)

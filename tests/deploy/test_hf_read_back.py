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

"""save/load: safetensors + plan.json, replayed on a fresh model, identical outputs."""

from __future__ import annotations

import json

import pytest
import torch

import shrink
from models import ORACLE_MODELS, MultiOutput, Residual, TinyMLP, randomize_bn


@pytest.mark.parametrize("name", sorted(ORACLE_MODELS))
def test_save_load_round_trip(tmp_path, name):
    factory, shape = ORACLE_MODELS[name]
    model, x = randomize_bn(factory()), torch.randn(shape)
    result = shrink.compress(model, x, ratio=0.5)
    folder = shrink.save(result, tmp_path / "out")
    loaded = shrink.load(folder, factory()).eval()
    with torch.no_grad():
        assert torch.equal(loaded(x), result.model.eval()(x))
    assert shrink.count(loaded, x) == result.after


def test_plan_json_contents(tmp_path):
    model = Residual()
    result = shrink.compress(model, torch.randn(1, 3, 8, 8), ratio=0.5)
    doc = json.loads((shrink.save(result, tmp_path / "o") / "plan.json").read_text())
    assert doc["shrink_version"] == shrink.__version__ and doc["torch_version"] == torch.__version__
    assert doc["settings"]["ratio"] == 0.5 and len(doc["source_sha256"]) == 64
    assert doc["kept"]["stem.0"]["out"] == result.plan.kept["stem.0"]["out"]
    assert doc["after"]["params"] == result.after.params


def test_existing_folder_is_refused_and_untouched(tmp_path):
    folder = tmp_path / "o"
    folder.mkdir()
    (folder / "mine.txt").write_text("keep me")
    result = shrink.compress(TinyMLP(), torch.randn(1, 2), ratio=0.5)
    with pytest.raises(shrink.ShrinkValueError, match="already exists"):
        shrink.save(result, folder)
    assert (folder / "mine.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o"]  # no temporary left behind


def test_plan_for_another_architecture_is_a_clear_error(tmp_path):
    result = shrink.compress(TinyMLP(), torch.randn(1, 2), ratio=0.5)
    folder = shrink.save(result, tmp_path / "o")
    with pytest.raises(shrink.PlanMismatchError, match="architecture"):
        shrink.load(folder, MultiOutput())


def test_plan_for_another_width_is_a_clear_error(tmp_path):
    result = shrink.compress(TinyMLP((2, 20, 2)), torch.randn(1, 2), ratio=0.5)
    folder = shrink.save(result, tmp_path / "o")
    with pytest.raises(shrink.PlanMismatchError):
        shrink.load(folder, TinyMLP((2, 8, 2)))


def test_load_needs_a_shrink_folder(tmp_path):
    with pytest.raises(shrink.ShrinkValueError, match="plan.json"):
        shrink.load(tmp_path, TinyMLP())

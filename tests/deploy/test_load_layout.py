"""`load` rebuilds the cut model from the plan's layout, without tracing; old plans still load.

tests/fixtures/plans_v0 holds folders written by shrink before plans recorded a layout (steps
only): they load by replaying the steps and must keep giving the outputs recorded beside them.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

import shrink
from shrink.cut import graph, layout
from models import ORACLE_MODELS, Attention, Residual, randomize_bn

OLD_PLANS = Path(__file__).resolve().parent.parent / "fixtures" / "plans_v0"


def load_untraced(folder, base, monkeypatch):
    """`shrink.load`, failing if it traces the model."""
    with monkeypatch.context() as patch:
        patch.setattr(graph, "trace", lambda *a, **k: pytest.fail("load traced the model"))
        return shrink.load(folder, base)


@pytest.mark.parametrize("name", sorted(ORACLE_MODELS))
def test_load_gives_the_saved_model_without_tracing(name, tmp_path, monkeypatch):
    build, shape = ORACLE_MODELS[name]
    torch.manual_seed(0)
    model = randomize_bn(build().eval())
    x = torch.randn(*shape)
    result = shrink.compress(model, x, ratio=0.5)
    assert layout.usable(result.plan.layout), result.plan.layout
    shrink.save(result, tmp_path / "o")
    loaded = load_untraced(tmp_path / "o", build().eval(), monkeypatch)
    with torch.no_grad():
        assert torch.equal(loaded(x), result.model(x))
    assert sum(p.numel() for p in loaded.parameters()) == result.after.params


@pytest.mark.parametrize("name", ["Residual", "Attention", "MHATransformer"])
def test_a_plan_written_before_layouts_still_loads(name):
    folder = OLD_PLANS / name
    assert "layout" not in json.loads((folder / "plan.json").read_text())  # the old format, as written then
    expected = load_file(str(folder / "expected.safetensors"))
    loaded = shrink.load(folder, ORACLE_MODELS[name][0]().eval())
    with torch.no_grad():
        assert torch.allclose(loaded(expected["input"]), expected["output"], rtol=1e-5, atol=1e-6)


def test_tied_weights_stay_one_tensor(tmp_path, monkeypatch):
    result = shrink.compress(TiedLM(), torch.randint(0, 20, (2, 5)), ratio=0.5)
    shrink.save(result, tmp_path / "o")
    loaded = load_untraced(tmp_path / "o", TiedLM(), monkeypatch)
    assert loaded.head.weight is loaded.embed.weight
    assert loaded.embed.weight.shape == result.model.embed.weight.shape


def test_a_buffer_outside_the_state_dict_is_saved_beside_the_weights(tmp_path, monkeypatch):
    model = Scaled()
    x = torch.randn(3, 8)
    result = shrink.compress(model, x, ratio=0.5)
    assert result.plan.layout["values"] == ["pe"]
    shrink.save(result, tmp_path / "o")
    assert (tmp_path / "o" / "values.safetensors").is_file()
    loaded = load_untraced(tmp_path / "o", Scaled(), monkeypatch)
    assert loaded.pe.shape == (1, result.model.fc1.out_features) and "pe" not in loaded.state_dict()
    with torch.no_grad():
        assert torch.equal(loaded(x), result.model(x))
    (tmp_path / "o" / "values.safetensors").unlink()
    with pytest.raises(shrink.ShrinkError, match="values.safetensors"):
        load_untraced(tmp_path / "o", Scaled(), monkeypatch)


def test_a_base_model_of_another_width_is_refused_by_name(tmp_path, monkeypatch):
    shrink.save(shrink.compress(Residual(), torch.randn(2, 3, 16, 16), ratio=0.5), tmp_path / "o")
    with pytest.raises(shrink.PlanMismatchError, match=r"'stem.0.weight' has shape \[12, 3, 3, 3\]; the plan was "
                                                       r"made from a model where it is \[8, 3, 3, 3\]"):
        load_untraced(tmp_path / "o", Residual(c=12), monkeypatch)


def test_a_cut_that_replaces_a_submodule_is_not_a_layout():
    model = Attention()
    before = layout.record(model)
    model.proj = nn.Sequential(nn.Linear(32, 32))
    found, why = layout.diff(before, model)
    assert found is None and "replaced submodules" in why and "'proj'" in why


def test_attributes_keep_their_types():
    model = nn.Sequential(nn.LayerNorm(6))
    before = layout.record(model)
    model[0].normalized_shape = (4,)
    found, _ = layout.diff(before, model)
    json.dumps(found)  # plain JSON
    fresh = nn.Sequential(nn.LayerNorm(6))
    layout.apply(json.loads(json.dumps(found)), fresh, {})
    assert fresh[0].normalized_shape == (4,) and isinstance(fresh[0].normalized_shape, tuple)


class TiedLM(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(20, 16)
        self.mix = nn.Linear(16, 16)
        self.head = nn.Linear(16, 20, bias=False)
        self.head.weight = self.embed.weight

    def forward(self, ids):
        return self.head(torch.relu(self.mix(self.embed(ids))))


class Scaled(nn.Module):
    """A position table kept as a non-persistent buffer, cut with its channels (layers/positional.py)."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(8, 16)
        self.fc2 = nn.Linear(16, 2)
        self.register_buffer("pe", torch.linspace(-1.0, 1.0, 16).unsqueeze(0), persistent=False)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x) + self.pe))

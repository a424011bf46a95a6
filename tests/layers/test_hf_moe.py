"""Mixtral at defaults: every expert's FFN cut alike (each expert its own units), the router untouched."""

from __future__ import annotations

import copy
import json

import pytest
import torch

import shrink
from hf_models import FAMILIES, transformers
from shrink.layers import hf_config, hf_moe

EXPERTS = [f"model.layers.{i}.mlp.experts" for i in range(2)]


def _mixtral():
    factory, inputs = FAMILIES["mixtral"]
    torch.manual_seed(0)
    return factory().eval(), inputs()


def test_every_expert_loses_the_same_count_router_untouched():
    model, x = _mixtral()
    result = shrink.compress(model, x, ratio=0.5)
    for i in range(2):
        moe, moe0 = result.model.model.layers[i].mlp, model.model.layers[i].mlp
        assert moe.experts.gate_up_proj.shape == (4, 2 * 32, 32) and moe.experts.down_proj.shape == (4, 32, 32)
        assert torch.equal(moe.gate.weight, moe0.gate.weight)  # the router reads the whole hidden width
    assert result.model.config.intermediate_size == 32 and hf_config.check(result.model) == []
    assert [s.layer for s in result.plan.steps if s.op == "experts"] == EXPERTS
    # 2 layers x 4 experts x 32 units x (gate row + up row + down column of 32), and per layer one key/value
    # group of 4 query heads (q 16 rows, k 4, v 4, o 16 columns, of 32).
    assert result.after.params == result.before.params - 2 * 4 * 32 * 3 * 32 - 2 * (16 + 4 + 4 + 16) * 32


def test_experts_cut_equals_their_units_masked():
    """Oracle: removing unit j of expert e equals zeroing column j of that expert's down projection."""
    model, x = _mixtral()
    result = shrink.compress(model, x, ratio={name: 0.5 for name in EXPERTS}, uniform=False)
    assert {s.op for s in result.plan.steps} == {"experts"}
    ref = copy.deepcopy(model)
    with torch.no_grad():
        for step in result.plan.steps:
            experts = ref.get_submodule(step.layer)
            for e, units in enumerate(hf_moe.per_expert(experts, step.removed)):
                assert len(units) == 32
                experts.down_proj[e][:, units] = 0
        expected, got = ref(**x).logits, result.model(**x).logits
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(got, model(**x).logits)  # the cut changed something: the oracle can fail


def test_each_expert_ranks_its_own_units():
    model, _ = _mixtral()
    experts = model.model.layers[0].mlp.experts
    with torch.no_grad():
        experts.gate_up_proj.fill_(1.0)
        experts.down_proj.fill_(1.0)
        experts.gate_up_proj[0, [5, 64 + 5]] = 0.01  # expert 0: unit 5 is the weakest
        experts.down_proj[0, :, 5] = 0.01
        experts.gate_up_proj[3, [7, 64 + 7]] = 0.01  # expert 3: unit 7
        experts.down_proj[3, :, 7] = 0.01
    chosen = hf_moe.per_expert(experts, hf_moe.choose(experts, 1, p=1))
    assert chosen == [[5], [0], [0], [7]]


def test_round_trip_outputs_and_generate_tokens_with_and_without_cache(tmp_path):
    model, x = _mixtral()
    result = shrink.compress(model, x, ratio=0.5)
    folder = shrink.save_pretrained(result, tmp_path / "o")
    assert json.loads((folder / "config.json").read_text())["intermediate_size"] == 32
    loaded = transformers.AutoModelForCausalLM.from_pretrained(folder).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(**x).logits, result.model(**x).logits, rtol=0, atol=0)
    runs = {}
    for label, m in (("memory", result.model), ("loaded", loaded)):
        for cache in (True, False):
            runs[label, cache] = m.generate(x["input_ids"], max_new_tokens=6, do_sample=False, use_cache=cache,
                                            pad_token_id=0).tolist()
    assert len(runs["memory", True][0]) == x["input_ids"].shape[1] + 6
    assert len({json.dumps(v) for v in runs.values()}) == 1, runs


def test_plan_replays_on_a_fresh_model(tmp_path):
    model, x = _mixtral()
    result = shrink.compress(model, x, ratio=0.5)
    factory, _ = FAMILIES["mixtral"]
    torch.manual_seed(0)
    loaded = shrink.load(shrink.save(result, tmp_path / "p"), factory().eval())
    with torch.no_grad():
        assert torch.equal(loaded(**x).logits, result.model(**x).logits)


def test_a_plan_with_unequal_expert_cuts_is_refused():
    model, x = _mixtral()
    experts = model.model.layers[0].mlp.experts
    with pytest.raises(ValueError, match="same number of units"):
        hf_moe.per_expert(experts, (0, 1, 64))


def test_onnx_export_at_defaults_switches_experts_implementation_for_export_only(tmp_path):
    model, x = _mixtral()
    result = shrink.compress(model, x, ratio=0.5)
    assert result.model.config._experts_implementation == "grouped_mm"  # transformers' default
    rep = shrink.export_onnx(result.model, x, tmp_path / "m.onnx")
    assert rep.batch_sizes == (1, 3) and rep.max_rel_diff <= 1e-4
    assert any("batched_mm" in n for n in rep.notes)
    assert result.model.config._experts_implementation == "grouped_mm"


def test_a_wrong_experts_cut_is_caught_by_the_masking_check_and_kept_whole(monkeypatch):
    """The experts' cut is checked exactly: cutting other units than the ranked ones is found and undone."""
    model, x = _mixtral()
    right = hf_moe.cut

    def off_by_one(experts, removed):
        n = hf_moe.width(experts)
        right(experts, [e * n + (j + 1) % n for e, units in enumerate(hf_moe.per_expert(experts, removed))
                        for j in units])

    monkeypatch.setattr(hf_moe, "cut", off_by_one)
    result = shrink.compress(model, x, ratio=0.5)
    assert all("masked" in result.kept_whole[name] for name in EXPERTS), result.kept_whole
    assert result.model.config.intermediate_size == 64

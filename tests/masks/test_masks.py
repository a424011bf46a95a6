"""sparsify, sparsity, make_permanent, prune_iteratively: exact counts and schedules."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import shrink
from models import ConvBN, TinyMLP


def _mlp():
    return nn.Sequential(nn.Linear(10, 20), nn.ReLU(), nn.Linear(20, 30), nn.ReLU(), nn.Linear(30, 5))


def test_local_fraction_exact_counts():
    model = _mlp()
    report = shrink.sparsify(model, 0.3)
    assert report.touched == ("0", "2") and report.left_alone[0][0] == "4"
    assert int((model[0].weight == 0).sum()) == round(0.3 * 200)
    assert int((model[2].weight == 0).sum()) == round(0.3 * 600)
    assert int((model[4].weight == 0).sum()) == 0


def test_local_count_exact():
    model = _mlp()
    shrink.sparsify(model, 17)
    assert int((model[0].weight == 0).sum()) == 17 and int((model[2].weight == 0).sum()) == 17


def test_global_fraction_and_count():
    model = _mlp()
    shrink.sparsify(model, 0.5, scope="global")
    assert int((model[0].weight == 0).sum()) + int((model[2].weight == 0).sum()) == 400
    model = _mlp()
    shrink.sparsify(model, 123, scope="global", include_last=True)
    assert sum(int((model[i].weight == 0).sum()) for i in (0, 2, 4)) == 123


def test_global_takes_smallest_magnitudes_across_layers():
    model = nn.Sequential(nn.Linear(2, 2, bias=False), nn.Linear(2, 2, bias=False), nn.Linear(2, 1))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[0.1, 0.2], [0.3, 0.4]]))
        model[1].weight.copy_(torch.tensor([[5.0, 6.0], [0.05, 7.0]]))
    shrink.sparsify(model, 3, scope="global")
    assert torch.equal(model[0].weight == 0, torch.tensor([[True, True], [False, False]]))
    assert torch.equal(model[1].weight == 0, torch.tensor([[False, False], [True, False]]))


def test_random_is_seeded():
    a, b, c = _mlp(), _mlp(), _mlp()
    b.load_state_dict(a.state_dict())
    c.load_state_dict(a.state_dict())
    shrink.sparsify(a, 0.4, method="random", seed=1)
    shrink.sparsify(b, 0.4, method="random", seed=1)
    shrink.sparsify(c, 0.4, method="random", seed=2)
    assert torch.equal(a[0].weight_mask, b[0].weight_mask) and not torch.equal(a[0].weight_mask, c[0].weight_mask)
    assert int((a[0].weight_mask == 0).sum()) == 80


def test_sparsity_matches_hand_count_from_masks_and_zeros():
    model = nn.Sequential(nn.Linear(3, 2), nn.ReLU(), nn.Linear(2, 1))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[0.0, 1, 2], [3, 0, 0]]))
        model[0].bias.copy_(torch.tensor([0.0, 1]))
        model[2].weight.copy_(torch.tensor([[1.0, 1]]))
    report = shrink.sparsity(model)
    assert [(l.weight_zeros, l.weight_total, l.bias_zeros, l.from_mask) for l in report.layers] == [
        (3, 6, 1, False), (0, 2, 0 if model[2].bias.item() != 0 else 1, False)]
    assert report.weight_sparsity == pytest.approx(3 / 8)
    shrink.sparsify(model, 1)  # masks one more weight of layer 0 (a non-zero one: zeros are smallest)
    report = shrink.sparsity(model)
    assert report.layers[0].from_mask and report.layers[0].weight_zeros == 1  # the mask counts, not the zeros


def test_make_permanent_bakes_masks():
    model = ConvBN()
    shrink.sparsify(model, 0.5)
    assert hasattr(model.conv1, "weight_orig")
    assert shrink.make_permanent(model) == ["conv1", "conv2"]
    assert not hasattr(model.conv1, "weight_orig") and isinstance(model.conv1.weight, nn.Parameter)
    assert shrink.sparsity(model).layers[0].weight_sparsity == pytest.approx(0.5, abs=1 / 432)


@pytest.mark.parametrize("scope", ["local", "global"])
def test_schedule_hits_targets(scope):
    model = _mlp()
    steps_seen = []
    log = shrink.prune_iteratively(model, 0.9, 4, scope=scope, finetune=lambda m, k: steps_seen.append(k),
                                   evaluate=lambda m: 1.0)
    assert steps_seen == [1, 2, 3, 4] and [e["step"] for e in log] == [1, 2, 3, 4]
    gamma = 1 - 0.1 ** (1 / 4)
    for entry, k in zip(log, range(1, 5)):
        assert entry["target_sparsity"] == pytest.approx(1 - (1 - gamma) ** k)
        # within one weight per layer (local) or overall (global) of the schedule
        assert abs(entry["sparsity"] - entry["target_sparsity"]) * 800 <= (2 if scope == "local" else 1)
    assert log[-1]["sparsity"] == pytest.approx(0.9, abs=1 / 800)


def test_bad_arguments():
    with pytest.raises(shrink.ShrinkValueError, match="within \\[0, 1\\]"):
        shrink.sparsify(_mlp(), 1.5)
    with pytest.raises(shrink.ShrinkValueError, match="structured=True with scope='local'"):
        shrink.sparsify(_mlp(), 0.5, scope="global", structured=True)
    with pytest.raises(shrink.ShrinkValueError, match="method must be"):
        shrink.sparsify(_mlp(), 0.5, method="l3")
    with pytest.raises(shrink.ShrinkValueError, match="0 <= target < 1"):
        shrink.prune_iteratively(_mlp(), 1.0, 3)

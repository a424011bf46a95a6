"""fit, evaluate, recalibrate_bn and distillation."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import shrink
from models import ConvBN, TinyMLP, randomize_bn
from shrink.recover.train import distillation_loss


def _data(n=64):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 2, generator=g)
    y = (x[:, 0] * x[:, 1] > 0).long()
    return DataLoader(TensorDataset(x, y), batch_size=16, shuffle=True, generator=g), DataLoader(TensorDataset(x, y), batch_size=64)


def test_fit_learns_and_logs():
    train, val = _data()
    model = TinyMLP((2, 32, 32, 2))
    before = shrink.evaluate(model, val)
    history = shrink.fit(model, train, epochs=60, lr=1e-2, val_loader=val, progress=False)
    assert len(history) == 60 and history[-1]["loss"] < history[0]["loss"]
    assert history[-1]["val_accuracy"] == shrink.evaluate(model, val) > max(before, 0.8)


def test_distillation_matches_teacher_when_alpha_is_one():
    s = torch.tensor([[2.0, 0.0]])
    assert float(distillation_loss(s, s.clone(), torch.tensor([1]), temperature=4.0, alpha=1.0)) == pytest.approx(0.0, abs=1e-6)
    hard = distillation_loss(s, s.clone(), torch.tensor([1]), temperature=4.0, alpha=0.0)
    assert float(hard) == pytest.approx(float(nn.functional.cross_entropy(s, torch.tensor([1]))))


def test_recalibrate_bn_computes_the_data_statistics():
    model = ConvBN().eval()
    x = torch.randn(32, 3, 8, 8)
    loader = DataLoader(TensorDataset(x, torch.zeros(32)), batch_size=32)
    assert shrink.recalibrate_bn(model, loader) == 2
    with torch.no_grad():
        pre = model.conv1(x)
    assert torch.allclose(model.bn1.running_mean, pre.mean((0, 2, 3)), atol=1e-5)
    assert torch.allclose(model.bn1.running_var, pre.var((0, 2, 3), unbiased=True), rtol=1e-4)
    assert not model.training and model.bn1.momentum == 0.1


def test_recalibrate_bn_without_bn_is_a_no_op():
    assert shrink.recalibrate_bn(TinyMLP(), _data()[0]) == 0


def test_evaluate_empty_loader_is_a_clear_error():
    with pytest.raises(shrink.ShrinkValueError, match="no samples"):
        shrink.evaluate(TinyMLP(), [])


def test_recalibrate_bn_with_an_empty_loader_leaves_statistics_alone():
    model = randomize_bn(ConvBN())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(shrink.ShrinkValueError, match="no batches"):
        shrink.recalibrate_bn(model, [])
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())

"""inplace=True: a failure after the first cut leaves the caller's model exactly as it came."""

from __future__ import annotations

import json

import pytest
import torch

import shrink
import shrink.cut.compress as compress_module
from models import ConvBN, TinyMLP


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _same(model, state) -> bool:
    now = model.state_dict()
    return set(now) == set(state) and all(now[k].shape == state[k].shape and torch.equal(now[k], state[k])
                                          for k in state)


@pytest.fixture
def crash_after_cutting(monkeypatch):
    """The cut happens, then the last check fails (or a bug, or Ctrl-C)."""

    def fail(*args, **kwargs):
        raise RuntimeError("simulated failure after the cut")

    monkeypatch.setattr(compress_module, "check_outputs", fail)


@pytest.mark.parametrize("reinit", ["trained", "random", "initial"])
def test_compress_inplace_failure_restores_the_model(crash_after_cutting, reinit):
    model = ConvBN()
    initial = {k: torch.randn_like(v) if v.is_floating_point() else v for k, v in model.state_dict().items()}
    before = _state(model)
    with pytest.raises(RuntimeError, match="simulated"):
        shrink.compress(model, torch.randn(2, 3, 16, 16), inplace=True, reinit=reinit,
                        initial_state=initial if reinit == "initial" else None)
    assert _same(model, before)
    assert model.conv1.out_channels == 16 and model.bn1.num_features == 16
    model(torch.randn(2, 3, 16, 16))  # still runs


def test_compress_iteratively_inplace_failure_in_a_later_round_restores_the_model():
    model = TinyMLP()
    before = _state(model)

    def finetune(m, k):
        with torch.no_grad():
            for p in m.parameters():
                p.add_(1.0)  # training writes into the tensors
        if k == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        shrink.compress_iteratively(model, torch.randn(2, 2), ratio=0.5, steps=3, finetune=finetune, inplace=True)
    assert _same(model, before)


def test_load_inplace_that_does_not_fit_leaves_the_base_model_uncut(tmp_path):
    shrink.save(shrink.compress(TinyMLP(), torch.randn(2, 2)), tmp_path / "a")
    base = TinyMLP((2, 20, 18, 16, 14, 2, 3))  # one more layer: the plan replays, the weights do not fit
    before = _state(base)
    with pytest.raises(shrink.PlanMismatchError, match="do not fit"):
        shrink.load(tmp_path / "a", base, inplace=True)
    assert _same(base, before)

"""The registry: families are found through it, each with the hooks it declares."""

from __future__ import annotations

from torch import nn

from shrink.layers import recurrent, registry


def test_recurrent_types_get_the_family_pruner():
    model = nn.Sequential(nn.GRU(4, 6), nn.LSTM(6, 6), nn.Linear(6, 2))
    found = registry.pruners(model)
    assert isinstance(found[nn.GRU], recurrent.RecurrentPruner)
    assert isinstance(found[nn.LSTM], recurrent.RecurrentPruner)
    assert nn.Linear not in found


def test_every_family_declares_at_least_one_hook():
    for family in registry.FAMILIES:
        hooks = (family.pruners, family.trace, family.op_reason, family.finish, family.cut_heads,
                 family.shared_heads, family.extra_rows, family.inexact, family.plain_weights)
        assert any(h is not None for h in hooks), family.name

"""Property-based: random MLPs and CNNs satisfy the oracle and the size invariants."""

from __future__ import annotations

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import shrink
from models import randomize_bn
from oracle import assert_matches_oracle

SETTINGS = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(
    widths=st.lists(st.integers(1, 24), min_size=1, max_size=4),
    ratio=st.floats(0.0, 0.95),
    scope=st.sampled_from(["local", "global"]),
    seed=st.integers(0, 1000),
)
def test_random_mlp(widths, ratio, scope, seed):
    torch.manual_seed(seed)
    sizes = [5, *widths, 3]
    layers = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    model = nn.Sequential(*layers[:-1])
    x = torch.randn(4, 5)
    result = shrink.compress(model, x, ratio=ratio, scope=scope)
    assert_matches_oracle(model, result, x)
    hidden = [m.out_features for m in result.model if isinstance(m, nn.Linear)][:-1]
    assert all(h >= 1 for h in hidden) and result.model[-1].out_features == 3
    expected = sum(a * b + b for a, b in zip([5, *hidden], [*hidden, 3]))
    assert result.after.params == expected
    if scope == "local":
        assert hidden == [w - int(w * ratio + 1e-9) if w - int(w * ratio + 1e-9) > 0 else 1 for w in widths]


@SETTINGS
@given(
    channels=st.lists(st.integers(1, 12), min_size=1, max_size=3),
    ratio=st.floats(0.0, 0.9),
    residual=st.booleans(),
    seed=st.integers(0, 1000),
)
def test_random_cnn(channels, ratio, residual, seed):
    torch.manual_seed(seed)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            sizes = [3, *channels]
            self.convs = nn.ModuleList(nn.Conv2d(a, b, 3, padding=1) for a, b in zip(sizes[:-1], sizes[1:]))
            self.bns = nn.ModuleList(nn.BatchNorm2d(b) for b in channels)
            self.extra = nn.Conv2d(channels[-1], channels[-1], 3, padding=1)
            self.head = nn.Linear(channels[-1], 4)

        def forward(self, x):
            for conv, bn in zip(self.convs, self.bns):
                x = torch.relu(bn(conv(x)))
            if residual:
                x = x + self.extra(x)
            return self.head(x.mean((2, 3)))

    model = randomize_bn(Net())
    x = torch.randn(2, 3, 8, 8)
    result = shrink.compress(model, x, ratio=ratio)
    assert_matches_oracle(model, result, x)
    assert result.model(x).shape == (2, 4)
    if ratio == 0:
        assert result.after == result.before

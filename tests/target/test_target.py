"""Speed targets and budgets: allocation against brute force, budgets met as counted, the clear
error of an impossible target, round_to="auto" on an injected latency table. No timing is asserted."""

from __future__ import annotations

import itertools
import random

import pytest
import torch

import shrink
import shrink.zoo
from models import ConvBN, Residual
from shrink.target import allocate as alloc
from shrink.target import solve, tables
from shrink.target.space import Knob, Layer, Space


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SHRINK_CACHE_DIR", str(tmp_path / "cache"))


def _brute(options, budget):
    best = None
    for combo in itertools.product(*[range(len(o)) for o in options]):
        cost = sum(options[g][j][0] for g, j in enumerate(combo))
        value = sum(options[g][j][1] for g, j in enumerate(combo))
        if cost <= budget and (best is None or value > best):
            best = value
    return best


@pytest.mark.parametrize("seed", range(20))
def test_knapsack_equals_brute_force(seed):
    rng = random.Random(seed)
    options = [[(rng.uniform(0, 10), rng.uniform(0, 10)) for _ in range(rng.randint(1, 5))] for _ in range(4)]
    budget = rng.uniform(5, 30)
    chosen = alloc.knapsack(options, budget)
    best = _brute(options, budget)
    if best is None:
        assert chosen is None
    else:
        assert sum(options[g][j][0] for g, j in enumerate(chosen)) <= budget + 1e-9
        assert sum(options[g][j][1] for g, j in enumerate(chosen)) == pytest.approx(best)


def test_allocation_on_a_synthetic_latency_table_is_the_brute_force_best():
    # Three groups with hand-set scores; each feeds its own layer, whose latency vs width is a
    # table where 8 and 12 are fast and the odd widths slow (as blocked kernels behave).
    scores = [torch.tensor([9.0, 1, 1, 1, 5, 5, 1, 1, 3, 3, 1, 1]), torch.tensor([1.0] * 12),
              torch.tensor([4.0, 4, 4, 4, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1])]
    knobs = [Knob(f"g{i}", 12, s) for i, s in enumerate(scores)]
    layers = [Layer(f"l{i}", "conv", 3, 12, 1, (1, 3, 8, 8), knob_out=i) for i in range(3)]
    space = Space(knobs, layers)
    table = {4: 1.0, 6: 2.5, 8: 1.6, 10: 3.0, 12: 2.0}
    weight = [1.0, 2.0, 0.5]

    def cost(i, keep):
        return weight[i] * table[keep[i]]

    candidates = [sorted(table)] * 3
    for budget in (3.5, 4.0, 5.5, 7.0, 9.0):
        keep = alloc.allocate(space, cost, budget, candidates)
        options = [[(weight[i] * table[n], knobs[i].value(n)) for n in sorted(table)] for i in range(3)]
        best = _brute(options, budget)
        assert keep is not None and sum(cost(i, keep) for i in range(3)) <= budget
        assert sum(k.value(n) for k, n in zip(knobs, keep)) == pytest.approx(best)
    assert alloc.allocate(space, cost, 3.4, candidates) is None  # below the cheapest choice (3.5)


def test_fast_widths_drop_widths_a_wider_one_beats():
    assert tables.fast_widths({4: 1.0, 6: 2.5, 8: 1.6, 10: 3.0, 12: 2.0}) == [4, 8, 12]


@pytest.mark.parametrize("kind,fraction", [("macs", 0.4), ("params", 0.5), ("macs", 0.15)])
def test_budgets_are_met_as_counted(kind, fraction):
    model, x = Residual().eval(), torch.randn(1, 3, 16, 16)
    result = shrink.compress(model, x, **{kind: fraction})
    before, after = shrink.count(model, x), shrink.count(result.model, x)
    assert getattr(after, kind) <= fraction * getattr(before, kind)
    assert getattr(after, kind) >= 0.75 * fraction * getattr(before, kind)  # used the budget, not a blunt cut
    assert result.after == after and result.model(x).shape == model(x).shape
    assert result.plan.settings["target"] == {kind: fraction}


def test_budget_below_what_the_model_allows_says_so():
    with pytest.raises(shrink.ShrinkValueError, match=r"macs=1e-05 cannot be met.*Ask for at least macs="):
        shrink.compress(ConvBN().eval(), torch.randn(1, 3, 16, 16), macs=1e-5)


def test_impossible_speedup_raises_with_best_reached_and_limits(monkeypatch):
    monkeypatch.setattr(solve, "VERIFY_SECONDS", 0.2)
    model, x = ConvBN(c=8).eval(), torch.randn(1, 3, 16, 16)
    with pytest.raises(shrink.ShrinkError) as err:
        shrink.compress(model, x, speedup=100)
    text = str(err.value)
    assert "speedup=100 was not reached on onnxruntime cpu batch 1" in text
    assert "best measured speed-up is x" in text and "What limits it: at the narrowest widths" in text
    assert "layers kept whole" in text and "do not shrink with width" in text


def test_target_and_ratio_are_exclusive():
    x = torch.randn(1, 3, 16, 16)
    with pytest.raises(shrink.ShrinkValueError, match="give one of ratio=, speedup="):
        shrink.compress(ConvBN(), x, ratio=0.5, speedup=2)
    with pytest.raises(shrink.ShrinkValueError, match="give one of"):
        shrink.compress(ConvBN(), x, macs=0.5, params=0.5)
    with pytest.raises(shrink.ShrinkValueError, match="0 < macs <= 1"):
        shrink.compress(ConvBN(), x, macs=2)
    with pytest.raises(shrink.ShrinkValueError, match="device='cuda' but CUDA is not available|CUDA"):
        if torch.cuda.is_available():
            pytest.skip("checks the path of a machine without CUDA")
        shrink.compress(ConvBN(), x, speedup=2, device="cuda")


def test_round_to_auto_takes_the_widths_the_table_favours(monkeypatch, tmp_path):
    # An injected table where widths that are multiples of 6 run three times faster per channel:
    # shrink must learn 6 from it (no rule in the code says 6).
    calls = []

    def fake(runtime, device, op, shape, c_in, c_out, groups, attrs, threads):
        calls.append((c_in, c_out))
        slow = lambda c: 1.0 if c % 6 == 0 else 3.0  # noqa: E731
        return 0.001 + 1e-3 * c_in * c_out * slow(c_in) * slow(c_out)

    monkeypatch.setattr(tables, "_time_op", fake)
    model, x = ConvBN(c=16).eval(), torch.randn(1, 3, 16, 16)
    plain = shrink.compress(model, x, ratio=0.4)
    assert (plain.model.conv1.out_channels, plain.model.conv2.out_channels) == (10, 20)
    auto = shrink.compress(model, x, ratio=0.4, round_to="auto")
    assert (auto.model.conv1.out_channels, auto.model.conv2.out_channels) == (12, 24)  # next fast width up
    assert auto.plan.settings["round_to"] == "auto" and auto.measured is None
    assert list((tmp_path / "cache").glob("latency-*-onnxruntime-cpu-b1-*.json"))
    calls.clear()
    shrink.compress(model, x, ratio=0.4, round_to="auto")
    assert calls == []  # the second call reads the cached table


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("runtime", ["torch", "torch-fp16", "onnxruntime"])
def test_speed_targets_run_on_cuda(runtime, monkeypatch):
    import onnxruntime as ort

    if runtime == "onnxruntime" and "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("needs onnxruntime-gpu")
    monkeypatch.setattr(solve, "VERIFY_SECONDS", 0.5)
    model, x = Residual(c=32).eval(), torch.randn(1, 3, 32, 32)
    try:
        result = shrink.compress(model, x, speedup=1.2, runtime=runtime, device="cuda", batch_size=8)
    except shrink.ShrinkError as exc:  # a target a tiny model cannot reach must say so, not fail otherwise
        assert "was not reached on " + runtime + " cuda batch 8" in str(exc)
        return
    assert (result.measured.runtime, result.measured.device, result.measured.batch_size) == (runtime, "cuda", 8)


def test_a_head_weighs_as_the_weights_it_carries():
    model = shrink.zoo.ViT(image=32, patch=8, dim=64, depth=1, heads=4, num_classes=10).eval()
    from shrink.cut import graph
    from shrink.target.space import build

    x = torch.randn(1, 3, 32, 32)
    space = build(graph.trace(model, x), x)
    heads = [k for k in space.knobs if k.kind == "heads"]
    assert len(heads) == 1 and heads[0].channels_per_unit == 16
    attn = model.blocks[0].attn
    mass = float(attn.qkv.weight.detach().abs().sum() + attn.proj.weight.detach().abs().sum())  # qkv rows, proj columns
    assert heads[0].value(4) == pytest.approx(mass, rel=1e-5)
    assert 0 < heads[0].value(1) < heads[0].value(2) < heads[0].value(4)


def test_allocation_keeps_the_channels_that_carry_the_most_weight():
    # Two equal-width groups whose channels cost the same, one feeding a 3x3 conv with four times
    # the fan-in of the other's 1x1: under a parameter budget the heavy group keeps more channels.
    # Counting channels alike (scores scaled to mean 1 per group) would split the cut evenly.
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 1), torch.nn.ReLU(), torch.nn.Conv2d(16, 16, 3, padding=1),
                                torch.nn.ReLU(), torch.nn.Conv2d(16, 16, 1), torch.nn.ReLU(), torch.nn.Conv2d(16, 4, 1))
    with torch.no_grad():  # every output channel of one layer equally important: no ranking to exploit
        for m in model:
            if isinstance(m, torch.nn.Conv2d):
                m.weight.copy_(torch.sign(m.weight) * 0.1)
    from shrink.cut import graph
    from shrink.target.space import build

    x = torch.randn(1, 3, 8, 8)
    space = build(graph.trace(model, x), x)
    by_name = {k.name: j for j, k in enumerate(space.knobs)}
    heavy, light = by_name["0"], by_name["4"]  # "0" feeds the 3x3 conv (144 weights a channel), "4" a 1x1 (4)
    keep = alloc.allocate(space, alloc.params_cost(space), 0.6 * alloc.total(space, alloc.params_cost(space),
                          [k.units for k in space.knobs]), [alloc.fine_grid(k.units) for k in space.knobs])
    assert keep is not None and keep[heavy] > keep[light]

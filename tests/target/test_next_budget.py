"""The verify loop's next budget: a secant that learns the part of the latency that does not shrink."""

from __future__ import annotations

import pytest

from shrink.target.solve import next_budget


def _ms(total):  # a runtime with 2 ms that no width changes, plus 0.5 ms per unit of the tables' total
    return 2.0 + 0.5 * total


def test_one_secant_step_lands_on_the_goal_despite_a_fixed_part():
    dense = (10.0, _ms(10.0))  # 7 ms
    want = dense[1] / 2  # speedup=2
    first = 5.0  # the first round scales the budget as if nothing were fixed: 4.5 ms, x1.56
    budget = next_budget([dense, (first, _ms(first))], want)
    assert budget == pytest.approx(3.0) and _ms(budget) == pytest.approx(want)
    # the proportional rule the loop used before asks for 3.89: still 13% short of the goal
    proportional = first * (dense[1] / _ms(first)) / 2
    assert _ms(proportional) > want * 1.1


def test_the_bracketing_points_are_used_and_no_slope_gives_none():
    points = [(10.0, 7.0), (2.0, 3.0), (6.0, 5.0), (4.0, 4.1)]  # 4.1 above and 3.0 below 3.5
    assert next_budget(points, 3.5) == pytest.approx(2.0 + 0.5 * 2 / 1.1)
    assert next_budget([(10.0, 7.0)], 3.5) is None
    assert next_budget([(10.0, 7.0), (5.0, 7.5)], 3.5) is None  # cutting measured slower: no usable slope

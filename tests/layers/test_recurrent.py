"""Recurrent layers: hidden units cut across gates, directions and layers; nested state inputs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import shrink
from oracle import assert_matches_oracle
from real_models import RNNClassifier, RNNModel, _tokens
from shrink._util import inputs as _inputs
from shrink.layers import recurrent

CASES = [(kind, layers, bi) for kind in ("LSTM", "GRU", "RNN") for layers, bi in ((1, False), (2, False), (2, True))]


@pytest.mark.parametrize("kind,layers,bi", CASES)
def test_cut_equals_masked(kind, layers, bi):
    model = RNNClassifier(kind, nhid=12, nlayers=layers, bidirectional=bi).eval()
    x = _tokens((3, 6))
    result = shrink.compress(model, x, ratio=0.5)
    rnn = result.model.rnn
    assert rnn.hidden_size == 6
    assert result.model.fc.in_features == 6 * (2 if bi else 1)
    assert result.plan.kept["rnn"]["out"]  # the hidden units are in the plan
    assert_matches_oracle(model, result, x)


def test_known_answer_rows_of_every_gate():
    """Units 1 and 3 have the weakest weights: rows j, H+j, 2H+j, 3H+j and column j go, in both layers."""
    torch.manual_seed(0)
    lstm = nn.LSTM(3, 4, num_layers=2, bidirectional=True)
    with torch.no_grad():
        for name, p in lstm.named_parameters():
            if name.startswith("weight"):
                p.fill_(1.0)
                for g in range(4):
                    p[[g * 4 + 1, g * 4 + 3]] = 0.01
    original = {n: p.detach().clone() for n, p in lstm.named_parameters()}
    recurrent.RecurrentPruner().prune_out_channels(lstm, [1, 3, 5, 7])  # [fwd | bwd] channels of units 1, 3
    rows = [0, 2, 4, 6, 8, 10, 12, 14]
    assert lstm.hidden_size == 2
    assert torch.equal(lstm.weight_hh_l0, original["weight_hh_l0"][rows][:, [0, 2]])
    assert torch.equal(lstm.weight_ih_l1_reverse, original["weight_ih_l1_reverse"][rows][:, [0, 2, 4, 6]])
    assert torch.equal(lstm.bias_ih_l1, original["bias_ih_l1"][rows])
    assert lstm(torch.randn(5, 2, 3))[0].shape == (5, 2, 4)


def test_a_unit_must_go_in_both_directions():
    lstm = nn.LSTM(3, 4, bidirectional=True)
    with pytest.raises(ValueError, match="every direction"):
        recurrent.RecurrentPruner().prune_out_channels(lstm, [1])


def test_selection_removes_units_from_both_directions_together():
    model = RNNClassifier("GRU", nhid=8, nlayers=1, bidirectional=True).eval()
    result = shrink.compress(model, _tokens((2, 5)), ratio=0.5)
    kept = result.plan.kept["rnn"]["out"]
    fwd = [i for i in kept if i < 8]
    assert [i - 8 for i in kept if i >= 8] == fwd and len(fwd) == 4


def test_state_passed_in_keeps_hidden_whole_and_cuts_the_embedding():
    model = RNNModel("LSTM", nhid=12).eval()
    h = torch.zeros(2, 3, 12)
    x = (_tokens((5, 3)), (h, h.clone()))
    result = shrink.compress(model, x, ratio=0.5)
    assert result.model.rnn.hidden_size == 12  # the caller's (h, c) must still fit
    assert result.model.rnn.input_size == 8
    assert result.after.params < result.before.params
    assert "passed in by the caller" in dict(shrink.analyze(model, x).kept_whole)["rnn"]
    assert_matches_oracle(model, result, x)


def test_state_returned_as_output_keeps_hidden_whole():
    class ReturnsState(nn.Module):
        def __init__(self):
            super().__init__()
            self.gru = nn.GRU(4, 6, batch_first=True)

        def forward(self, x):
            return self.gru(x)

    model = ReturnsState().eval()
    result = shrink.compress(model, torch.randn(2, 5, 4), ratio=0.5)
    assert result.model.gru.hidden_size == 6


def test_nested_inputs_round_trip_through_a_plan_spec():
    h = torch.zeros(2, 3, 12)
    spec = _inputs.to_spec((_tokens((5, 3)), (h, h)))
    rebuilt = _inputs.from_spec(spec)
    assert isinstance(rebuilt[1], tuple) and rebuilt[1][0].shape == (2, 3, 12) and rebuilt[0].dtype == torch.long
    assert "(float32[2x3x12], float32[2x3x12])" in _inputs.describe((_tokens((5, 3)), (h, h)))


@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_save_load_and_onnx(kind, tmp_path):
    model = RNNModel(kind, nhid=12).eval()
    h = torch.zeros(2, 3, 12)
    x = (_tokens((5, 3)), (h, h.clone()) if kind == "LSTM" else h)
    result = shrink.compress(model, x, ratio=0.5)
    shrink.save(result, tmp_path / "out")
    loaded = shrink.load(tmp_path / "out", RNNModel(kind, nhid=12))
    with torch.no_grad():
        a = _inputs.flatten_outputs(result.model(*x))
        b = _inputs.flatten_outputs(loaded.eval()(*x))
    assert all(torch.equal(a[k], b[k]) for k in a)
    report = shrink.export_onnx(result.model, x, tmp_path / "m.onnx", dynamic_batch=False)
    assert report.max_abs_diff < 1e-4
    if kind == "LSTM":  # (h, c) is a tuple input: a dynamic batch is refused with the fix
        with pytest.raises(shrink.ShrinkError, match="dynamic_batch=False"):
            shrink.export_onnx(result.model, x, tmp_path / "m2.onnx")


def test_a_discarded_state_is_never_mistaken_for_a_later_output():
    """A state the forward throws away is freed at once; a later tensor at its address is not that state.

    The watch used to remember states by id() alone: the model's output could land at a freed state's
    address and keep the LSTM whole, depending on the allocation history of the process (seen in CI).
    """
    lstm = nn.LSTM(4, 6, batch_first=True)
    watch = recurrent.StateWatch(nn.Sequential(lstm))
    try:
        out, _ = lstm(torch.randn(2, 3, 4))
        _ = None  # the state (h, c) is discarded, as `y, _ = self.rnn(x)` does on its next use
        later = [out * 2 for _ in range(200)]  # new tensor objects, the kind that reuse a freed address
    finally:
        watch.close()
    assert watch.fixed(later) == {}

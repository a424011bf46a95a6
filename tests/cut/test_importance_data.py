"""Data-aware importance (activation, taylor) beside L1/L2: known answers on hand-set weights and data."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import shrink
from models import Attention, GroupedQueryAttention, TinyMLP


def _linear(weight, bias=None) -> nn.Linear:
    weight = torch.tensor(weight, dtype=torch.float32)
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    with torch.no_grad():
        layer.weight.copy_(weight)
        if bias is not None:
            layer.bias.copy_(torch.tensor(bias, dtype=torch.float32))
    return layer


def _kept(result, layer: str) -> list[int]:
    return result.plan.kept[layer]["out"]


# --- an MLP: big weights on an input the data never feeds ------------------------------------

def mlp() -> nn.Sequential:
    """Hidden units 0 and 2 read input 0 (big weights); units 1 and 3 read input 1 (small weights)."""
    return nn.Sequential(_linear([[10, 0], [0, 1], [9, 0], [0, 2]], [0, 0, 0, 0]), nn.ReLU(),
                         _linear([[1, 1, 1, 1], [1, -1, 1, -1]], [0, 0]))


ONLY_INPUT_1 = [torch.tensor([[0.0, 5.0], [0.0, 3.0]])] * 3  # input 0 is always zero


@pytest.mark.parametrize("importance, calibration, kept", [
    ("l1", None, [0, 2]),                     # |row|: 10, 1, 9, 2
    ("l2", None, [0, 2]),
    ("activation", ONLY_INPUT_1, [1, 3]),    # mean |output|: 0, 4, 0, 8
    ("taylor", ONLY_INPUT_1, [1, 3]),        # units 0 and 2 are zero on the data: no gradient reaches them
])
def test_mlp_known_answer(importance, calibration, kept):
    model = mlp()
    result = shrink.compress(model, torch.randn(1, 2), ratio=0.5, importance=importance, calibration=calibration)
    assert _kept(result, "0") == kept
    assert result.plan.kept["2"]["in"] == kept  # the consumer's columns follow
    assert result.importance["method"] == importance
    assert result.plan.settings["importance"] == importance
    # The kept units carry their trained weights, not the stand-ins the ranking read.
    assert torch.equal(result.model[0].weight, model[0].weight[kept])
    assert torch.equal(result.model[2].weight, model[2].weight[:, kept])


def test_norm_and_importance_name_the_same_ranking():
    model, x = TinyMLP(), torch.randn(1, 2)
    assert shrink.compress(model, x, norm=2).plan.kept == shrink.compress(model, x, importance="l2").plan.kept
    assert shrink.compress(model, x).plan.kept == shrink.compress(model, x, importance="l1").plan.kept
    assert shrink.compress(model, x).importance == {"method": "l1"}


def test_activation_is_the_mean_absolute_output():
    """Outputs on the three inputs: unit 0: 5, -5, 0; unit 1: 3, 3, 6; unit 2: 1, 0.5, 1.5.

    mean |y|: 3.33, 4, 1 (keep 2: units 0, 1; keep 1: unit 1). L1 keeps unit 0 (norms 10, 6, 1.5);
    a signed mean (0, 4, 1) would keep units 1 and 2.
    """
    model = nn.Sequential(_linear([[5, -5], [3, 3], [1, 0.5]]), nn.ReLU(), _linear([[1, 1, 1]]))
    data = [torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]]), torch.tensor([[1.0, 1.0]])]
    result = shrink.compress(model, torch.randn(1, 2), ratio=0.34, importance="activation", calibration=data)
    assert _kept(result, "0") == [0, 1]
    result = shrink.compress(model, torch.randn(1, 2), ratio=0.67, importance="activation", calibration=data)
    assert _kept(result, "0") == [1]
    assert _kept(shrink.compress(model, torch.randn(1, 2), ratio=0.67), "0") == [0]
    assert result.importance["batches"] == 3 and result.importance["seconds"] >= 0


# --- coupled channels: a residual add sums its producers' scores --------------------------------

class TwoBranches(nn.Module):
    """h = a(x) + b(x): every channel of h is produced by a and b together."""

    def __init__(self):
        super().__init__()
        self.a = _linear([[0.5, 0.5], [0, 0], [0.4, 0.4], [5, -5]])
        self.b = _linear([[0, 0], [0.5, 0.5], [0.4, 0.4], [0, 0]])
        self.head = _linear([[1, 1, 1, 1], [1, -1, 1, -1]])

    def forward(self, x):
        return self.head(torch.relu(self.a(x) + self.b(x)))


def test_coupled_channels_sum_the_activation_of_every_producer():
    ones = [torch.ones(4, 2)]
    # activation of a: 1, 0, 0.8, 0 and of b: 0, 1, 0.8, 0 -> summed 1, 1, 1.6, 0: channel 2
    # (a alone would keep 0, b alone 1); L1: a 1, 0, 0.8, 10 and b 0, 1, 0.8, 0 -> channel 3.
    act = shrink.compress(TwoBranches(), torch.randn(1, 2), ratio=0.75, importance="activation", calibration=ones)
    assert _kept(act, "a") == _kept(act, "b") == [2]
    assert _kept(shrink.compress(TwoBranches(), torch.randn(1, 2), ratio=0.75), "a") == [3]


# --- convolutions (channels on dim 1) and embeddings (channels are columns) --------------------

def test_conv_channels_rank_by_their_mean_absolute_output():
    conv = nn.Conv2d(2, 3, 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([[4.0, -4.0], [1.0, 1.0], [0.5, 0.0]]).view(3, 2, 1, 1))
    model = nn.Sequential(conv, nn.ReLU(), nn.Conv2d(3, 2, 1))
    data = [torch.ones(2, 2, 3, 3)]  # outputs 0, 2, 0.5 everywhere; L1 norms 8, 2, 0.5
    assert _kept(shrink.compress(model, torch.randn(1, 2, 3, 3), ratio=0.67), "0") == [0]
    assert _kept(shrink.compress(model, torch.randn(1, 2, 3, 3), ratio=0.67, importance="activation",
                                 calibration=data), "0") == [1]


class Embedded(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(4, 3)
        with torch.no_grad():  # rows 2 and 3 (never looked up) are big in channel 0; rows 0, 1 in channel 1
            self.embed.weight.copy_(torch.tensor([[0.1, 1.0, 0.2], [0.1, 2.0, 0.3], [50, 0, 0], [60, 0, 0]]))
        self.head = nn.Linear(3, 2)

    def forward(self, ids):
        return self.head(self.embed(ids).mean(1))


def test_embedding_channels_rank_by_the_rows_the_data_looks_up():
    example = torch.tensor([[0, 1, 2, 3]])
    data = [torch.tensor([[0, 1, 0, 1]]), torch.tensor([[1, 1, 0, 0]])]
    assert _kept(shrink.compress(Embedded(), example, ratio=0.67), "embed") == [0]
    assert _kept(shrink.compress(Embedded(), example, ratio=0.67, importance="activation", calibration=data),
                 "embed") == [1]


# --- heads: a head whose values are zero outputs nothing ----------------------------------------

def _silence(model: nn.Module, v_rows: slice, loud: list[tuple[nn.Linear, slice]]) -> nn.Module:
    with torch.no_grad():
        v = model.qkv if isinstance(model, Attention) else model.v_proj
        v.weight[v_rows] = 0
        if v.bias is not None:
            v.bias[v_rows] = 0
        for layer, rows in loud:  # the silenced heads get the biggest q/k weights: L1 keeps them
            layer.weight[rows] *= 10
    return model


def test_fused_heads_rank_by_their_attention_output():
    """4 heads of 8 dims in one [q | k | v] layer; heads 0 and 1 have zero values and big q/k weights."""
    model = Attention()  # rows: q 0-31, k 32-63, v 64-95; head h has 8 rows of each
    _silence(model, slice(64, 80), [(model.qkv, slice(0, 16)), (model.qkv, slice(32, 48))])
    x, data = torch.randn(1, 6, 12), [torch.randn(4, 6, 12) for _ in range(2)]
    l1 = shrink.compress(model, x, ratio=0.5)
    assert _kept(l1, "qkv")[:16] == list(range(16))  # heads 0 and 1 kept by L1
    for importance in ("activation", "taylor"):
        result = shrink.compress(model, x, ratio=0.5, importance=importance, calibration=data)
        assert _kept(result, "qkv") == list(range(16, 32)) + list(range(48, 64)) + list(range(80, 96)), importance
        assert result.plan.kept["proj"]["in"] == list(range(16, 32))


def test_grouped_query_units_rank_by_their_attention_output():
    """2 key/value groups of 4 query heads; group 1's values are zero and its q/k weights big."""
    model = GroupedQueryAttention()
    _silence(model, slice(8, 16), [(model.q_proj, slice(32, 64)), (model.k_proj, slice(8, 16))])
    x, data = torch.randn(1, 6, 12), [torch.randn(4, 6, 12) for _ in range(2)]
    assert _kept(shrink.compress(model, x, ratio=0.5), "q_proj") == list(range(32, 64))
    for importance in ("activation", "taylor"):
        result = shrink.compress(model, x, ratio=0.5, importance=importance, calibration=data)
        assert _kept(result, "q_proj") == list(range(32)), importance
        assert _kept(result, "k_proj") == _kept(result, "v_proj") == list(range(8))


# --- taylor: |w * dL/dw| by hand ---------------------------------------------------------------

class OwnLoss(nn.Module):
    """fc2(relu(fc1(x))) that returns its own loss (the sum of its outputs), as a Hugging Face model does."""

    def __init__(self):
        super().__init__()
        self.fc1 = _linear([[1], [2], [3]])
        self.fc2 = _linear([[3, 1, 0.5], [0, 0, 0]])

    def forward(self, x):
        y = self.fc2(torch.relu(self.fc1(x)))
        return {"loss": y.sum(), "logits": y}


def test_taylor_uses_the_models_own_loss():
    # L = sum(fc2 relu(fc1 x)) at x = 1: dL/dw_i = fc2[:, i].sum() = 3, 1, 0.5; |w * dL/dw| = 3, 2, 1.5
    # L1 keeps the largest weight (unit 2); taylor keeps unit 0.
    x = torch.ones(1, 1)
    assert _kept(shrink.compress(OwnLoss(), x, ratio=0.67), "fc1") == [2]
    result = shrink.compress(OwnLoss(), x, ratio=0.67, importance="taylor", calibration=[x])
    assert _kept(result, "fc1") == [0]
    assert result.importance["loss"] == "the model's own loss"
    assert _kept(shrink.compress(OwnLoss(), x, ratio=0.34, importance="taylor", calibration=[x]), "fc1") == [0, 1]


def test_taylor_with_labels_is_cross_entropy_against_them():
    """Oracle: the scores computed with plain autograd on the same batches."""
    torch.manual_seed(1)
    model = TinyMLP((4, 12, 3))
    data = [(torch.randn(8, 4), torch.randint(0, 3, (8,))) for _ in range(3)]
    probe = TinyMLP((4, 12, 3))
    probe.load_state_dict(model.state_dict())
    for x, y in data:
        F.cross_entropy(probe(x), y).backward()
    w = probe.net[0].weight
    expected = sorted(torch.argsort((w * w.grad).abs().sum(1), descending=True)[:6].tolist())
    result = shrink.compress(model, torch.randn(1, 4), ratio=0.5, importance="taylor", calibration=data)
    assert _kept(result, "net.0") == expected
    assert result.importance["loss"] == "cross-entropy against the labels"
    assert all(p.grad is None for p in model.parameters())  # the caller's model is left as it was


class TinyLM(nn.Module):
    def __init__(self, vocab=11, dim=6):
        super().__init__()
        self.embed, self.mix, self.out = nn.Embedding(vocab, dim), nn.Linear(dim, dim), nn.Linear(dim, vocab)

    def forward(self, ids):
        return self.out(torch.relu(self.mix(self.embed(ids))))


def test_taylor_on_token_ids_is_next_token_cross_entropy():
    torch.manual_seed(2)
    model = TinyLM()
    data = [torch.randint(0, 11, (2, 7)) for _ in range(2)]
    probe = TinyLM()
    probe.load_state_dict(model.state_dict())
    for ids in data:
        logits = probe(ids)
        F.cross_entropy(logits[:, :-1].reshape(-1, 11), ids[:, 1:].reshape(-1)).backward()
    w = probe.mix.weight
    expected = sorted(torch.argsort((w * w.grad).abs().sum(1), descending=True)[:3].tolist())
    result = shrink.compress(model, data[0], ratio=0.5, importance="taylor", calibration=data, ignore=["embed"])
    assert _kept(result, "mix") == expected
    assert result.importance["loss"] == "next-token cross-entropy against the input ids"


# --- options through targets and rounds ---------------------------------------------------------

def test_a_budget_ranks_with_the_data_too():
    result = shrink.compress(mlp(), torch.randn(1, 2), macs=0.5, importance="activation", calibration=ONLY_INPUT_1)
    assert _kept(result, "0") == [1, 3] and result.importance["method"] == "activation"


def test_iterative_rounds_measure_again_and_add_up_the_cost():
    batches = (b for b in ONLY_INPUT_1)  # a generator: each round must still see every batch
    result, _ = shrink.compress_iteratively(mlp(), torch.randn(1, 2), ratio=0.5, steps=2, importance="activation",
                                            calibration=batches)
    assert result.plan.kept["0"]["out"] == [1, 3]
    assert result.importance["batches"] == 2 * len(ONLY_INPUT_1)


def test_a_layer_that_cannot_be_measured_ranks_by_weight_and_is_listed():
    class Recurrent(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm, self.head = nn.LSTM(3, 8, batch_first=True), nn.Linear(8, 2)

        def forward(self, x):
            return self.head(self.lstm(x)[0][:, -1])

    result = shrink.compress(Recurrent(), torch.randn(1, 5, 3), ratio=0.5, importance="activation",
                             calibration=[torch.randn(2, 5, 3)])
    assert result.importance["by_weight"] == ["lstm"]
    assert result.model.lstm.hidden_size == 4


# --- errors --------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, match", [
    ({"importance": "taylor"}, r"importance='taylor' needs calibration="),
    ({"importance": "activation"}, r"needs calibration=.*importance='l1'"),
    ({"importance": "fisher"}, r"importance must be one of \('l1', 'l2', 'activation', 'taylor'\)"),
    ({"importance": "l1", "norm": 2}, r"importance='l1' and norm=2 disagree"),
    ({"importance": "taylor", "norm": 2, "calibration": ONLY_INPUT_1}, r"drop norm=2"),
    ({"calibration": ONLY_INPUT_1}, r"calibration= is only read by importance='activation' or 'taylor'"),
    ({"importance": "taylor", "calibration": []}, r"calibration= yielded no batches"),
    ({"importance": "taylor", "calibration": [torch.randn(2, 5)]}, r"cannot run calibration batch 0"),
    ({"importance": "activation", "calibration": [(torch.randn(2, 2), 1, 2)]}, r"calibration batch 0 must be"),
])
def test_bad_importance_options_say_what_to_pass(kwargs, match):
    with pytest.raises(shrink.ShrinkValueError, match=match):
        shrink.compress(mlp(), torch.randn(1, 2), ratio=0.5, **kwargs)


def test_calibration_must_be_batches():
    with pytest.raises(shrink.ShrinkTypeError, match=r"Wrap one batch as \[batch\]"):
        shrink.compress(mlp(), torch.randn(1, 2), importance="taylor", calibration=torch.randn(3, 2))

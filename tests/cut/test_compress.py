"""compress: the masking oracle, known answers and invariants on every fixture model."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import shrink
from models import ORACLE_MODELS, Attention, Conv1x1Head, GroupedQueryAttention, MultiOutput, Residual, TinyMLP, randomize_bn
from oracle import assert_matches_oracle


def _model(name):
    factory, shape = ORACLE_MODELS[name]
    return randomize_bn(factory()), torch.randn(shape)


@pytest.mark.parametrize("scope", ["local", "global"])
@pytest.mark.parametrize("name", sorted(ORACLE_MODELS))
def test_cut_model_equals_masked_original(name, scope):
    model, x = _model(name)
    result = shrink.compress(model, x, ratio=0.5, scope=scope)
    assert result.after.params < result.before.params
    assert result.after.macs < result.before.macs
    assert_matches_oracle(model, result, x)


@pytest.mark.parametrize("name", sorted(ORACLE_MODELS))
def test_input_model_untouched_and_shapes_kept(name):
    model, x = _model(name)
    before = copy.deepcopy(model.state_dict())
    with torch.no_grad():
        y = model(x)
    result = shrink.compress(model, x, ratio=0.3)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    with torch.no_grad():
        assert result.model(x).shape == y.shape


@pytest.mark.parametrize("name", sorted(ORACLE_MODELS))
def test_ratio_zero_changes_nothing(name):
    model, x = _model(name)
    result = shrink.compress(model, x, ratio=0.0)
    assert result.plan.steps == ()
    assert result.after == result.before
    with torch.no_grad():
        assert torch.equal(result.model(x), model(x))


def test_known_answer_mlp_keeps_largest_l1_rows():
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    with torch.no_grad():
        # L1 norms of the rows: 3, 30, 0.3, 12 -> keep rows 1 and 3
        model[0].weight.copy_(torch.tensor([[1.0, 1, 1], [10, -10, 10], [0.1, 0.1, -0.1], [4, 4, 4]]))
    result = shrink.compress(model, torch.randn(2, 3), ratio=0.5)
    assert result.plan.kept["0"] == {"out": [1, 3]}
    assert result.plan.kept["2"] == {"in": [1, 3]}
    assert torch.equal(result.model[0].weight, model[0].weight[[1, 3]])
    assert torch.equal(result.model[2].weight, model[2].weight[:, [1, 3]])


def test_known_answer_l2_differs_from_l1():
    model = nn.Sequential(nn.Linear(4, 2), nn.ReLU(), nn.Linear(2, 1))
    with torch.no_grad():
        # row 0: L1 4, L2 2;  row 1: L1 3, L2 3 -> L1 keeps 0, L2 keeps 1
        model[0].weight.copy_(torch.tensor([[1.0, 1, 1, 1], [3, 0, 0, 0]]))
    x = torch.randn(1, 4)
    assert shrink.compress(model, x, ratio=0.5, norm=1).plan.kept["0"]["out"] == [0]
    assert shrink.compress(model, x, ratio=0.5, norm=2).plan.kept["0"]["out"] == [1]


def test_residual_scores_sum_every_producer():
    """A residual channel's score is the sum of its producers' L1 norms, not the root's alone."""
    model = Residual(c=4)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.fill_(1.0)
        model.stem[0].weight[0].fill_(100.0)  # channel 0 strong at the stem only
        model.layer1[1].conv2.weight[3].fill_(100.0)  # channel 3 strong in a later block only
    result = shrink.compress(randomize_bn(model), torch.randn(1, 3, 8, 8), ratio=0.5)
    assert result.plan.kept["stem.0"]["out"] == [0, 3]


def test_parameter_count_matches_prediction():
    model = TinyMLP((4, 10, 8, 3))
    result = shrink.compress(model, torch.randn(2, 4), ratio=0.5)
    # hidden widths 10 -> 5 and 8 -> 4: 4*5+5 + 5*4+4 + 4*3+3
    assert result.after.params == 4 * 5 + 5 + 5 * 4 + 4 + 4 * 3 + 3 == shrink.count(result.model, torch.randn(1, 4)).params


def test_conv_classifier_head_is_never_narrowed():
    model, x = _model("Conv1x1Head")
    result = shrink.compress(model, x, ratio=0.7)
    assert result.model.classifier.out_channels == 10
    assert "classifier" not in result.plan.kept or "out" not in result.plan.kept["classifier"]


def test_dict_outputs_keep_their_widths():
    model = MultiOutput()
    x = torch.randn(3, 6)
    result = shrink.compress(model, x, ratio=0.5)
    out = result.model(x)
    assert out["logits"].shape == (3, 3) and out["embedding"].shape == (3, 8)
    assert result.model.body[0].out_features == 16 and result.model.body[2].out_features == 12


def test_group_is_never_emptied():
    model = TinyMLP((3, 2, 2))
    result = shrink.compress(model, torch.randn(1, 3), ratio=0.99)
    assert result.model.net[0].out_features == 1


def test_round_to_keeps_multiples():
    model = TinyMLP((4, 30, 3))
    result = shrink.compress(model, torch.randn(1, 4), ratio=0.5, round_to=8)
    assert result.model.net[0].out_features == 16  # 15 kept, rounded up to a multiple of 8


def test_per_layer_ratio_dict():
    model = TinyMLP((4, 20, 20, 3))
    result = shrink.compress(model, torch.randn(1, 4), ratio={"net.0": 0.5})
    assert result.model.net[0].out_features == 10
    assert result.model.net[2].out_features == 20


def test_ignore_keeps_layer_whole():
    model, x = _model("Residual")
    result = shrink.compress(model, x, ratio=0.5, ignore=["layer1.0.conv1"])
    assert result.model.layer1[0].conv1.out_channels == 8
    assert result.model.layer1[1].conv1.out_channels == 4


def test_attention_cuts_whole_heads_and_updates_attributes():
    model = Attention(dim=32, num_heads=4)
    x = torch.randn(2, 5, 12)
    result = shrink.compress(model, x, ratio={"": 0.5})
    assert result.model.num_heads == 2 and result.model.head_dim == 8
    assert result.model.qkv.out_features == 3 * 16 and result.model.proj.in_features == 16
    assert_matches_oracle(model, result, x)


def test_grouped_query_attention_keeps_group_structure():
    model = GroupedQueryAttention(num_heads=8, num_kv_heads=2)
    x = torch.randn(2, 5, 12)
    result = shrink.compress(model, x, ratio={"": 0.5})
    m = result.model
    assert (m.num_heads, m.num_key_value_heads, m.num_key_value_groups) == (4, 1, 4)
    assert m.q_proj.out_features == 32 and m.k_proj.out_features == 8
    assert_matches_oracle(model, result, x)


def test_reinit_initial_reproduces_sliced_initial_tensors():
    initial_model = Residual()
    initial = copy.deepcopy(initial_model.state_dict())
    trained = randomize_bn(copy.deepcopy(initial_model))
    with torch.no_grad():
        for p in trained.parameters():
            p.add_(torch.randn_like(p))
    x = torch.randn(2, 3, 16, 16)
    from_trained = shrink.compress(trained, x, ratio=0.5)
    rewound = shrink.compress(trained, x, ratio=0.5, reinit="initial", initial_state=initial)
    assert rewound.plan.kept == from_trained.plan.kept  # ranked on the trained weights
    w0 = initial["layer1.0.conv1.weight"]
    kept = rewound.plan.kept["layer1.0.conv1"]
    expected = w0[kept["out"]][:, kept["in"]]
    assert torch.equal(rewound.model.layer1[0].conv1.weight, expected)
    stem = rewound.plan.kept["stem.1"]["out"]
    assert torch.equal(rewound.model.stem[1].running_var, initial["stem.1.running_var"][stem])


def test_reinit_random_is_seeded():
    model, x = _model("ConvBN")
    a = shrink.compress(model, x, ratio=0.5, reinit="random", seed=3)
    b = shrink.compress(model, x, ratio=0.5, reinit="random", seed=3)
    c = shrink.compress(model, x, ratio=0.5, reinit="random", seed=4)
    assert torch.equal(a.model.conv2.weight, b.model.conv2.weight)
    assert not torch.equal(a.model.conv2.weight, c.model.conv2.weight)
    kept = a.plan.kept["conv2"]
    assert not torch.equal(a.model.conv2.weight, model.conv2.weight[kept["out"]][:, kept["in"]])


def test_inplace_cuts_the_given_model():
    model = TinyMLP((4, 10, 3))
    result = shrink.compress(model, torch.randn(1, 4), ratio=0.5, inplace=True)
    assert result.model is model and model.net[0].out_features == 5


def test_input_residual_width_is_kept():
    model, x = _model("InputResidual")
    result = shrink.compress(model, x, ratio=0.5)
    assert result.model.fc2.out_features == 16
    assert result.model.fc1.out_features == 16


def test_result_to_dict_is_json():
    import json

    model, x = _model("Concat")
    d = shrink.compress(model, x, ratio=0.5).to_dict()
    assert json.loads(json.dumps(d))["after"]["params"] < d["before"]["params"]


def test_conv_head_model_prunes_features():
    model = Conv1x1Head()
    result = shrink.compress(model, torch.randn(1, 3, 8, 8), ratio=0.5)
    assert result.model.features[0].out_channels == 8


def test_a_torch_compiled_model_is_cut_through_its_wrapper(tmp_path):
    """torch.compile's wrapper is unwrapped (tracing it failed inside dynamo); names stay the module's own."""
    torch.manual_seed(0)
    model = Residual().eval()
    x = torch.randn(2, 3, 8, 8)
    compiled = torch.compile(model)
    result = shrink.compress(compiled, x, ratio=0.5)
    assert result.after.params < result.before.params
    assert not any(name.startswith("_orig_mod") for name in result.plan.kept)
    assert_matches_oracle(model, result, x)
    assert [g.root for g in shrink.analyze(compiled, x, check=False).prunable] == \
        [g.root for g in shrink.analyze(model, x, check=False).prunable]

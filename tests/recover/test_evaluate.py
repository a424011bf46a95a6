"""evaluate: accuracy, perplexity and a caller's metric, against hand counts on tiny sets."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import shrink


def _identity() -> nn.Linear:
    """Logits = inputs: the predicted class is the position of the largest input."""
    layer = nn.Linear(3, 3)
    with torch.no_grad():
        layer.weight.copy_(torch.eye(3))
        layer.bias.zero_()
    return layer


def _x(*classes: int) -> torch.Tensor:
    return torch.eye(3)[list(classes)]


def test_accuracy_counts_samples_not_batches():
    # batch 1: predicts 0, 1; labels 0, 1 -> 2 right. batch 2: predicts 2, 2, 0; labels 2, 1, 1 -> 1 right.
    data = [(_x(0, 1), torch.tensor([0, 1])), (_x(2, 2, 0), torch.tensor([2, 1, 1]))]
    assert shrink.evaluate(_identity(), data) == 3 / 5  # not the mean of the batches' 1.0 and 0.33
    assert shrink.evaluate(_identity(), data, metric="accuracy") == 3 / 5


def test_accuracy_leaves_out_labels_of_minus_100_and_reads_hugging_face_logits():
    class Wrapped(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = _identity()

        def forward(self, x):
            return {"logits": self.inner(x)}

    data = [(_x(0, 1, 2), torch.tensor([0, -100, 1]))]  # one right, one wrong, one not counted
    assert shrink.evaluate(Wrapped(), data) == 0.5


def test_accuracy_restores_the_train_mode():
    model = _identity().train()
    shrink.evaluate(model, [(_x(0), torch.tensor([0]))])
    assert model.training


class Bigram(nn.Module):
    """Next-token probabilities set by hand: after token 0, p(1) = 1/2; after token 1, p(1) = 3/4."""

    def __init__(self):
        super().__init__()
        self.table = nn.Embedding(2, 2)
        with torch.no_grad():
            self.table.weight.copy_(torch.tensor([[0.5, 0.5], [0.25, 0.75]]).log())

    def forward(self, input_ids, attention_mask=None):
        return {"logits": self.table(input_ids)}


def test_perplexity_by_hand():
    ids = torch.tensor([[0, 1, 1]])  # predicts 1 after 0 (p 1/2), then 1 after 1 (p 3/4)
    expected = (0.5 * 0.75) ** -0.5
    assert shrink.evaluate(Bigram(), [ids], metric="perplexity") == pytest.approx(expected)
    assert shrink.evaluate(Bigram(), [(ids, ids)], metric="perplexity") == pytest.approx(expected)
    assert shrink.evaluate(Bigram(), [{"input_ids": ids}], metric="perplexity") == pytest.approx(expected)


def test_perplexity_leaves_out_minus_100_and_masked_positions():
    ids = torch.tensor([[0, 1, 1]])
    only_first = 2.0  # just the first prediction, p = 1/2
    assert shrink.evaluate(Bigram(), [(ids, torch.tensor([[0, 1, -100]]))], metric="perplexity") == pytest.approx(only_first)
    batch = {"input_ids": ids, "attention_mask": torch.tensor([[1, 1, 0]])}
    assert shrink.evaluate(Bigram(), [batch], metric="perplexity") == pytest.approx(only_first)


def test_perplexity_pools_tokens_over_batches():
    # batch 1: one prediction p 1/2; batch 2: two predictions p 3/4 each -> exp(mean NLL over 3 tokens)
    data = [torch.tensor([[0, 1]]), torch.tensor([[1, 1, 1]])]
    expected = math.exp(-(math.log(0.5) + 2 * math.log(0.75)) / 3)
    assert shrink.evaluate(Bigram(), data, metric="perplexity") == pytest.approx(expected)


def test_a_metric_function_returns_total_and_count():
    def squared_error(model, batch):
        x, y = batch
        return float(((model(x) - y) ** 2).sum()), y.numel()

    data = [(_x(0), torch.zeros(1, 3)), (_x(1, 2), torch.zeros(2, 3))]  # 3 ones among 9 entries
    assert shrink.evaluate(_identity(), data, metric=squared_error) == pytest.approx(3 / 9)


@pytest.mark.parametrize("model, data, kwargs, match", [
    (_identity(), [(_x(0), torch.tensor([0]))], {"metric": "bleu"}, r"metric must be one of \('accuracy', 'perplexity'\)"),
    (_identity(), [_x(0)], {}, r"\(inputs, labels\) pairs.*metric='perplexity'"),
    (_identity(), [(_x(0), torch.tensor([0, 1]))], {}, r"logits \[N, C, \.\.\.\] with labels"),
    (Bigram(), [torch.rand(1, 3)], {"metric": "perplexity"}, r"perplexity needs token ids"),
    (nn.Sequential(nn.Embedding(3, 3), nn.Flatten()), [torch.tensor([[0, 1]])], {"metric": "perplexity"},
     r"language-model logits must be \[batch, seq, vocab\]"),
    (Bigram(), [torch.tensor([[0]])], {"metric": "perplexity"}, r"yielded no tokens"),
    (_identity(), [], {}, r"yielded no samples"),
    (_identity(), [(_x(0), torch.tensor([0]))], {"metric": lambda m, b: 1.0}, r"must return \(total, count\)"),
])
def test_bad_input_is_one_clear_error(model, data, kwargs, match):
    with pytest.raises(shrink.ShrinkValueError, match=match):
        shrink.evaluate(model, data, **kwargs)


def test_perplexity_equals_the_exp_of_a_hugging_face_models_own_loss():
    """Oracle: GPT-2's own shifted cross-entropy (labels=input_ids), computed by transformers."""
    transformers = pytest.importorskip("transformers")
    from hf_models import gpt2

    model = gpt2().eval()
    assert isinstance(model, transformers.PreTrainedModel)
    ids = torch.randint(0, 100, (2, 8))
    with torch.no_grad():
        expected = math.exp(float(model(input_ids=ids, labels=ids).loss))
    assert shrink.evaluate(model, [{"input_ids": ids}], metric="perplexity") == pytest.approx(expected, rel=1e-5)
    assert shrink.evaluate(model, [ids], metric="perplexity") == pytest.approx(expected, rel=1e-5)

"""fit(task="lm"): next-token cross-entropy on token ids, Hugging Face outputs, per-token distillation."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import shrink
from dist_cases import TinyLM
from shrink.recover import objectives


class FixedLogits(nn.Module):
    """Logits that do not depend on the weights' training: row t of the table for token t (a bigram model)."""

    def __init__(self, table: torch.Tensor, hf: bool = False):
        super().__init__()
        self.table, self.hf = nn.Parameter(table.clone()), hf

    def forward(self, input_ids, attention_mask=None):
        out = self.table[input_ids]
        return SimpleNamespace(logits=out) if self.hf else out


TABLE = torch.tensor([[2.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 2.0]])  # each token predicts itself


def _first_loss(model, batches, **kwargs) -> float:
    return shrink.fit(model, batches, task="lm", lr=1e-9, progress=False, **kwargs)[0]["loss"]


def test_the_loss_is_next_token_cross_entropy_counted_by_hand():
    ids = torch.tensor([[0, 0, 1]])  # 0 -> 0 predicted right, 0 -> 1 predicted wrong
    right, wrong = -math.log(math.exp(2) / (math.exp(2) + 2)), -math.log(1 / (math.exp(2) + 2))
    assert _first_loss(FixedLogits(TABLE), [ids]) == pytest.approx((right + wrong) / 2, abs=1e-6)


def test_masked_positions_are_not_scored_and_hf_logits_are_read():
    batch = {"input_ids": torch.tensor([[0, 0, 1]]), "attention_mask": torch.tensor([[1, 1, 0]])}
    right = -math.log(math.exp(2) / (math.exp(2) + 2))  # the masked last token is no target
    assert _first_loss(FixedLogits(TABLE, hf=True), [batch]) == pytest.approx(right, abs=1e-6)


def test_pairs_of_ids_and_next_ids_are_scored_without_a_shift():
    ids, targets = torch.tensor([[0, 1]]), torch.tensor([[0, 2]])
    right, wrong = -math.log(math.exp(2) / (math.exp(2) + 2)), -math.log(1 / (math.exp(2) + 2))
    assert _first_loss(FixedLogits(TABLE), [(ids, targets)]) == pytest.approx((right + wrong) / 2, abs=1e-6)


def test_distilling_a_language_model_is_kl_per_token():
    student, teacher = TinyLM(), TinyLM()
    ids = torch.randint(0, 16, (2, 5))
    with torch.no_grad():
        s, t = student(ids)[:, :-1].reshape(-1, 16), teacher(ids)[:, :-1].reshape(-1, 16)
        y = ids[:, 1:].reshape(-1)
        T = 2.0
        hand = 0.5 * T**2 * F.kl_div(F.log_softmax(s / T, 1), F.softmax(t / T, 1), reduction="sum") / len(y) \
            + 0.5 * F.cross_entropy(s, y)
    got = _first_loss(student, [ids], teacher=teacher, temperature=T, alpha=0.5)
    assert got == pytest.approx(float(hand), abs=1e-6)


def test_a_language_model_learns_and_reports_validation_perplexity():
    torch.manual_seed(0)
    seq = torch.arange(16).repeat(4)  # 0 1 2 ... 15 0 1 ...: each token determines the next
    batches = [seq[i:i + 9].unsqueeze(0) for i in range(0, 48)]
    model = TinyLM(dim=16)
    before = objectives.lm_loss(model, batches[:4], device="cpu")
    history = shrink.fit(model, batches, task="lm", epochs=3, lr=3e-2, val_loader=batches[:4], progress=False)
    assert history[-1]["val_perplexity"] == pytest.approx(math.exp(history[-1]["val_loss"]))
    assert before > math.log(16) / 2  # it started near chance (perplexity 16)
    assert history[-1]["val_perplexity"] < 2.0


def test_bf16_on_cpu_trains_close_to_float32():
    batches = [torch.randint(0, 16, (4, 8), generator=torch.Generator().manual_seed(i)) for i in range(6)]
    runs = []
    for precision in (None, "bf16"):
        torch.manual_seed(0)
        runs.append(shrink.fit(TinyLM(), batches, task="lm", epochs=2, precision=precision, progress=False))
    assert runs[1][-1]["loss"] == pytest.approx(runs[0][-1]["loss"], rel=0.02)
    assert runs[1][-1]["loss"] != runs[0][-1]["loss"]  # autocast did run in bfloat16


@pytest.mark.parametrize("batch", [torch.randn(2, 4), [torch.zeros(2, 3, dtype=torch.long)], {"ids": torch.zeros(1, 3)}])
def test_what_is_no_batch_of_token_ids_is_refused(batch):
    with pytest.raises(shrink.ShrinkValueError, match="task='lm'.*token ids"):
        shrink.fit(TinyLM(), [batch], task="lm", progress=False)


def test_token_ids_given_to_a_classifier_point_at_task_lm():
    with pytest.raises(shrink.ShrinkValueError, match=r"\(inputs, labels\) pairs.*pass task='lm'"):
        shrink.fit(TinyLM(), [torch.zeros(2, 3, dtype=torch.long)], progress=False)


def test_the_count_is_the_scored_tokens():
    batch = objectives.split({"input_ids": torch.zeros(2, 4, dtype=torch.long),
                              "attention_mask": torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])}, "lm", "x")
    assert batch.count == 3 + 1

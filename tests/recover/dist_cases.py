"""Runs of `fit` done by 2 processes (dist_worker.py, under torchrun) and by one, compared in test_distributed.py.

Each case gives, for a world of W processes, the loader every rank is handed (its batch size per
rank) and the options; `reference` is the same run in one process with the global batch.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from models import TinyMLP

N, GLOBAL = 48, 8  # samples; global batch


def data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(N, 2, generator=g)
    return x, (x[:, 0] * x[:, 1] > 0).long()


def batches(size: int, count: int | None = None) -> list:
    x, y = data()
    out = [(x[i:i + size], y[i:i + size]) for i in range(0, N, size)]
    return out[:count] if count else out


class TinyLM(nn.Module):
    """Embedding -> Linear over a 16-token vocabulary: next-token logits [batch, time, vocab]."""

    def __init__(self, vocab: int = 16, dim: int = 8):
        super().__init__()
        self.emb, self.head = nn.Embedding(vocab, dim), nn.Linear(dim, vocab)

    def forward(self, ids):
        return self.head(torch.tanh(self.emb(ids)))


def ids(size: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(2)
    tokens = torch.randint(0, 16, (16, 6), generator=g)
    return [tokens[i:i + size] for i in range(0, 16, size)]


def model(case: str) -> nn.Module:
    torch.manual_seed(0)
    if case == "fsdp_nested":  # containers inside containers: FSDP is applied innermost first
        return nn.Sequential(nn.Sequential(nn.Linear(2, 16), nn.ReLU()), nn.Sequential(nn.Linear(16, 16), nn.ReLU()),
                             nn.Linear(16, 2))
    return TinyLM() if case.startswith("lm") else TinyMLP((2, 16, 16, 2))


def teacher() -> nn.Module:
    torch.manual_seed(7)
    return TinyLM()


def _loader(per_rank: int, shuffle: bool = False):
    return DataLoader(TensorDataset(*data()), batch_size=per_rank, shuffle=shuffle)


OPTIONS = dict(epochs=2, lr=1e-2, progress=False)

# name: (what each of W ranks gets, fit options); the reference run gets batches of GLOBAL.
CASES = {
    "ddp_loader": (lambda w: _loader(GLOBAL // w), {}),
    "ddp_shuffled_loader": (lambda w: _loader(GLOBAL // w, shuffle=True), {}),
    "ddp_list": (lambda w: batches(GLOBAL // w), {}),
    "ddp_accumulate": (lambda w: batches(GLOBAL // w // 2), {"accumulate": 2}),
    "ddp_partial_window": (lambda w: batches(GLOBAL // w, count=3 * w), {"accumulate": 2}),
    "fsdp_list": (lambda w: batches(GLOBAL // w), {"shard": True}),
    "fsdp_nested": (lambda w: batches(GLOBAL // w), {"shard": True, "accumulate": 1}),
    "lm_distil": (lambda w: ids(4 // w), {"task": "lm", "teacher": "teacher"}),
}


def options(case: str) -> dict:
    extra = dict(CASES[case][1])
    if extra.get("teacher") == "teacher":
        extra["teacher"] = teacher()
    return {**OPTIONS, **extra}


def reference(case: str):
    """One process, the same data in batches of the global size: (model, history)."""
    import shrink

    opts = {k: v for k, v in options(case).items() if k not in ("shard", "accumulate")}
    if case == "ddp_shuffled_loader":  # fit's DistributedSampler order, all on one rank
        ds = TensorDataset(*data())
        loader = DataLoader(ds, batch_size=GLOBAL, sampler=DistributedSampler(ds, num_replicas=1, rank=0, seed=0))
    elif case == "lm_distil":
        loader = ids(4)
    elif case == "ddp_partial_window":
        loader, opts["accumulate"] = batches(GLOBAL, count=3), 2
    else:
        loader = batches(GLOBAL)
    m = model(case)
    return m, shrink.fit(m, loader, distributed=False, **opts)

"""Ranking: how much each unit (neuron, filter, channel, head) is worth keeping.

The score of a unit is the Lp norm of its *own* weights: the row of every layer that produces
it, concatenated. For a Linear that is its row ``W[i, :]``; for a conv, the filter ``W[i]``; for an
embedding, the column ``W[:, i]``; for a transposed conv, ``W[:, i]``. Where several layers produce
one coupled channel (the branches of a residual add, the layers feeding a concat), their rows are
concatenated, so with ``norm=1`` the score is the *sum* of the producers' L1 norms and with
``norm=2`` the square root of the sum of their squared L2 norms. Normalisation layers, biases and
the consumers' input columns are not summed: this is the filter-norm criterion of Li et al. 2017
(and seed 000's neuron criterion), extended to coupled channels.
"""

from __future__ import annotations

import torch

from ..layers.rows import out_rows
from .graph import Group, Traced


def group_scores(traced: Traced, group: Group, p: int) -> torch.Tensor:
    """One score per channel of ``group`` (length ``group.width``); larger means keep."""
    dg = traced.dg
    total = torch.zeros(group.width, dtype=torch.float64)
    for item in group.tp_group:
        dep, idxs = item.dep, item.idxs
        if not dg.is_out_channel_pruning_fn(dep.handler):
            continue
        rows = out_rows(dep.target.module) if isinstance(dep.target.module, torch.nn.Module) else None
        if rows is None:
            continue
        root_idxs = item.root_idxs
        if any(r is None for r in root_idxs):
            continue
        if len(idxs) != rows.shape[0] or list(idxs) != list(range(rows.shape[0])):
            rows = rows[list(idxs)]
        rows = rows.float()
        part = (rows.abs().sum(dim=1) if p == 1 else rows.pow(2).sum(dim=1)).double()
        total.scatter_add_(0, torch.tensor(root_idxs, dtype=torch.long), part)
    return total.pow(1.0 / p)

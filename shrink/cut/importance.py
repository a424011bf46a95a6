"""Ranking: how much each unit (neuron, filter, channel, head) is worth keeping.

``importance=`` on `shrink.compress` picks the score; larger means keep. Every score is defined on
a unit's *producing rows* (the row of every layer that produces it) and aggregated over coupled
layers the same way, so the four agree on what a unit is and differ only in what they measure.

``"l1"`` (default, ``norm=1``) and ``"l2"`` (``norm=2``): the Lp norm of the unit's *own* weights.
For a Linear that is its row ``W[i, :]``; for a conv, the filter ``W[i]``; for an embedding, the
column ``W[:, i]``; for a transposed conv, ``W[:, i]``. Where several layers produce one coupled
channel (the branches of a residual add, the layers feeding a concat), their rows are
concatenated, so with ``norm=1`` the score is the *sum* of the producers' L1 norms and with
``norm=2`` the square root of the sum of their squared L2 norms. Normalisation layers, biases and
the consumers' input columns are not summed: this is the filter-norm criterion of Li et al. 2017
(and seed 000's neuron criterion), extended to coupled channels. Heads (and grouped-query
key/value groups) sum their q, k and v rows; a mixture-of-experts unit its gate row, up row and
down column; a gated MLP's unit both halves of the fused layer. No data is needed.

``"activation"`` (needs ``calibration=``): the mean absolute activation, Minitron's criterion
(Sreenivas et al. 2024, "LLM Pruning and Distillation in Practice: The Minitron Approach",
after Muralidharan et al. 2024), measured under ``torch.inference_mode``:

    channel/neuron c of a producing layer:   a_c = mean over batches and positions of |y[..., c]|
    unit (coupled channels):                 score = sum of a_c over its producing layers
    attention head h:                        score = sum over d of mean |o[..., h, d]|

where ``y`` is the layer's output (dim 1 for convs, the last dim otherwise; an MLP neuron is its
first layer's output, an embedding channel the embedding's output plus every layer that adds to
that residual width) and ``o`` the input of the block's output projection, i.e. the heads'
attention outputs. Minitron takes the L2 norm of each token's head output over d and sums over
batch and tokens; here the absolute values are averaged per dim and summed over d, the same
statistic every other unit uses. A GQA unit sums the query heads that share its key/value head.

``"taylor"`` (needs ``calibration=``): first-order Taylor importance (Molchanov et al. 2019,
"Importance Estimation for Neural Network Pruning"; torch-pruning's ``TaylorImportance``, which
LLM-Pruner also uses, with its default ``multivariable=False``):

    score = sum over the unit's producing rows of |w * dL/dw|

with ``dL/dw`` accumulated over the calibration batches (``L`` the mean loss of each batch). ``L``
is the model's own loss when it returns one (a Hugging Face model given ``labels``); else the
cross-entropy of the logits against the batch's labels (next-token, shifted by one, for
sequences); else, for token ids in and [batch, seq, vocab] out, the next-token cross-entropy
against the input ids; else the cross-entropy of the logits against their own argmax; else the
mean squared output (calibrate.py, ``_loss``). Heads sum their q, k, v rows, as for L1; experts
their gate, up and down entries.

Both data-aware scores are handed to the very functions below (``p=1``) through stand-in weight
tensors whose row sums are the scores (calibrate.py); what they cost (calibration batches,
seconds) is in ``Result.importance``. A layer that cannot be measured (recurrent layers and
stacked experts under ``"activation"``, parametrized weights) keeps its weights and ranks by L1;
`Result.importance` lists it under ``by_weight``.
"""
from __future__ import annotations

import torch

from ..layers.rows import out_rows, powered_sums
from .graph import Group, Traced


def group_scores(traced: Traced, group: Group, p: int) -> torch.Tensor:
    """One score per channel of ``group`` (length ``group.width``); larger means keep.

    A score the trace was handed (``traced.known_scores``: the streamed path ranks a width shared by
    every layer over all the layers of a model it never holds whole, deploy/stream.py) is used as is.
    """
    known = traced.known_scores.get(group.root_name)
    if known is not None:
        return known
    total = torch.zeros(group.width, dtype=torch.float64)
    for _, root_idxs, part in producing_parts(traced, group, p):
        total.scatter_add_(0, root_idxs, part)
    return total.pow(1.0 / p)


def producing_parts(traced: Traced, group: Group, p: int):
    """``(layer name, root indices, Σ|w|^p of each of its rows)`` for each producer `group_scores` sums."""
    dg = traced.dg
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
        if any(i >= rows.shape[0] for i in idxs):
            continue  # indices torch-pruning mapped past the layer (MGP-STR): they rank nothing here
        whole = len(idxs) == rows.shape[0] and list(idxs) == list(range(rows.shape[0]))
        part = powered_sums(rows, p, None if whole else list(idxs))
        yield traced.names.get(dep.target.module, ""), torch.tensor(root_idxs, dtype=torch.long), part

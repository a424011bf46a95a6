"""What shrink knows about individual layer types: their unit rows, and the Hugging Face Conv1D pruner.

A *unit* is one output channel: a Linear's row, a conv filter, an embedding's column.
"""

from __future__ import annotations

import torch
import torch_pruning as tp
from torch import nn

from .recurrent import is_recurrent, unit_rows


def is_hf_conv1d(module: nn.Module) -> bool:
    """GPT-2's ``transformers.pytorch_utils.Conv1D``: a Linear whose weight is stored [in, out]."""
    cls = type(module)
    return cls.__name__ == "Conv1D" and cls.__module__.startswith("transformers") and hasattr(module, "nf")


def is_linear_like(module: nn.Module) -> bool:
    return isinstance(module, nn.Linear) or is_hf_conv1d(module)


_CHUNK = 1 << 22  # elements per slice of `powered_sums` (16 MiB of float32)


def powered_sums(w: torch.Tensor, p: int, index=None) -> torch.Tensor:
    """``Σ |w[i]|^p`` for each row ``i`` of ``w`` (or each row listed in ``index``), as float64.

    Computed in float32 a few rows at a time, so a bf16 or fp16 weight is never copied whole:
    an 8B model's embedding is 1 GB in bf16 and its float32 copy and absolute value would be 4 GB.
    """
    w = w.detach()
    n = w.shape[0] if index is None else len(index)
    out = torch.empty(n, dtype=torch.float64)
    per = max(1, _CHUNK // max(1, w[0].numel() if w.shape[0] else 1))
    for start in range(0, n, per):
        if index is None:
            part = w[start:start + per]
        else:
            part = w.index_select(0, torch.as_tensor(index[start:start + per], dtype=torch.long, device=w.device))
        part = part.reshape(part.shape[0], -1).float()
        part = part.abs().sum(dim=1) if p == 1 else part.abs().pow(p).sum(dim=1)
        out[start:start + len(part)] = part.double().cpu()
    return out


def out_rows(module: nn.Module) -> torch.Tensor | None:
    """The module's weight as a [units, fan_in] matrix, one row per output unit; None if not a producer."""
    if isinstance(module, nn.MultiheadAttention):
        return None  # ranked through the layers around it; its own units are its heads' dims
    if is_recurrent(module):
        return unit_rows(module)  # [D*H, ...]: every gate's rows of hidden unit j, all layers
    weight = getattr(module, "weight", None)
    if not isinstance(weight, torch.Tensor):
        return None
    w = weight.detach()
    if is_hf_conv1d(module) or isinstance(module, nn.Embedding):
        return w.t()  # stored [in, out] / [vocab, dim]: units are columns
    if isinstance(module, nn.modules.conv._ConvTransposeNd):
        return w.transpose(0, 1).flatten(1)  # [in, out/groups, ...]
    if isinstance(module, (nn.modules.conv._ConvNd, nn.Linear)):
        return w.flatten(1)
    return None


def slice_linear_out(layer: nn.Module, keep: list[int]) -> None:
    """Keep only output units ``keep`` of a Linear or Conv1D."""
    keep_t = torch.tensor(keep, dtype=torch.long, device=layer.weight.device)
    if is_hf_conv1d(layer):
        layer.weight = nn.Parameter(layer.weight.data.index_select(1, keep_t).clone())
        layer.nf = len(keep)
    else:
        layer.weight = nn.Parameter(layer.weight.data.index_select(0, keep_t).clone())
        layer.out_features = len(keep)
    if layer.bias is not None:
        layer.bias = nn.Parameter(layer.bias.data.index_select(0, keep_t).clone())


def slice_linear_in(layer: nn.Module, keep: list[int]) -> None:
    """Keep only input columns ``keep`` of a Linear or Conv1D."""
    keep_t = torch.tensor(keep, dtype=torch.long, device=layer.weight.device)
    if is_hf_conv1d(layer):
        layer.weight = nn.Parameter(layer.weight.data.index_select(0, keep_t).clone())
    else:
        layer.weight = nn.Parameter(layer.weight.data.index_select(1, keep_t).clone())
        layer.in_features = len(keep)


def pruners(model: nn.Module) -> dict:
    """torch-pruning handlers this file brings: Hugging Face Conv1D, by its type."""
    return {type(m): Conv1DPruner() for m in model.modules() if is_hf_conv1d(m)}


def _keep(n: int, idxs) -> list[int]:
    drop = set(int(i) for i in idxs)
    return [i for i in range(n) if i not in drop]


class Conv1DPruner(tp.pruner.function.BasePruningFunc):
    """torch-pruning handler for Hugging Face Conv1D (GPT-2), whose weight is [in, out]."""

    def prune_out_channels(self, layer: nn.Module, idxs):
        slice_linear_out(layer, _keep(layer.weight.shape[1], idxs))
        return layer

    def prune_in_channels(self, layer: nn.Module, idxs):
        slice_linear_in(layer, _keep(layer.weight.shape[0], idxs))
        return layer

    def get_out_channels(self, layer: nn.Module) -> int:
        return layer.weight.shape[1]

    def get_in_channels(self, layer: nn.Module) -> int:
        return layer.weight.shape[0]

"""A stable hash of a state dict, to tie a plan to the weights it was made from."""

from __future__ import annotations

import hashlib

import torch


def state_hash(state: dict[str, torch.Tensor]) -> str:
    """SHA-256 over the names, shapes, dtypes and bytes of a state dict, in name order."""
    h = hashlib.sha256()
    for key in sorted(state):
        tensor = state[key].detach().cpu().contiguous()
        h.update(f"{key}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        if tensor.numel():  # hashed where it lies: no copy of an 8B model's 1 GB embedding
            h.update(tensor.reshape(-1).view(torch.uint8).numpy().data)
    return h.hexdigest()

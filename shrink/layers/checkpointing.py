"""Activation checkpointing in the forward: blocks run through ``torch.utils.checkpoint`` while traced.

What the family looks like (training code left on, timm's ``checkpoint_seq``, older repositories)::

    x = torch.utils.checkpoint.checkpoint(self.block, x)                     # reentrant before torch 2.4
    x = torch.utils.checkpoint.checkpoint(self.block, x, use_reentrant=True)

The reentrant variant runs the block under ``no_grad`` inside one autograd node
(``CheckpointFunctionBackward``): the traced graph shows nothing of the block, so a cut that
reaches it leaves its layers at the old width ("expected input to have 32 channels, but got 16"),
and the block's own widths are never found. While the graph is traced, `Inline` makes the
reentrant checkpoint call the block directly, so autograd records what it does; the model's
outputs do not change (checkpointing only trades memory for recomputation in the backward pass).
The non-reentrant variant already records the block and is left alone.
"""

from __future__ import annotations

from torch import nn
from torch.utils import checkpoint


def _direct(function, _preserve_rng_state, *args):
    return function(*args)


class Inline:
    """While open: reentrant ``torch.utils.checkpoint`` calls run the checkpointed function directly."""

    def __init__(self, _model: nn.Module) -> None:
        self._own = "apply" in vars(checkpoint.CheckpointFunction)
        self._saved = vars(checkpoint.CheckpointFunction).get("apply")
        checkpoint.CheckpointFunction.apply = staticmethod(_direct)

    def close(self) -> None:
        if self._own:
            checkpoint.CheckpointFunction.apply = self._saved
        else:
            del checkpoint.CheckpointFunction.apply  # back to the inherited autograd.Function.apply

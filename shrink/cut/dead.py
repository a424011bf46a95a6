"""Dead ends: layers that run in the forward but whose outputs reach no model output.

torch-pruning builds its graph by walking back from the model's outputs, so a layer computed and
then dropped is not in the graph at all. SigLIP's image classifier mean-pools the last hidden state
and never reads the vision tower's attention-pooling head (``vision_model.head``); MONAI's
BasicUNet++ without deep supervision computes ``final_conv_0_1`` .. ``0_3`` and returns only
``0_4``. Nothing then cuts their input columns when the width they read is narrowed, and the cut
model fails inside them, so healing kept the whole residual width (SigLIP: 0% removed).

Such a layer is no consumer whose width must be protected. The tracer hands the ends of these
branches to torch-pruning as extra outputs (`sinks`: the tensors the forward made and nothing
read, less the model's outputs and what they depend on), so the branch is traced and cut
with the widths it reads, and marks them so that they protect nothing: what they write is never
returned, so only the live outputs are compared by the masking check.
"""

from __future__ import annotations

import torch
from torch.utils._pytree import tree_flatten


def note(unread: dict, out, args, kwargs) -> None:
    """Called for every torch function of the tracing forward (opaque._Owners): ``unread`` keeps each
    tensor an operation made until a later differentiable operation reads it.

    What is left when the forward returns is small: the model's outputs, the ends of dead branches,
    and the values a layer returns beside its output that the caller drops (MultiheadAttention's
    averaged weights). A read that makes no autograd node (``.shape``, ``argmax``, ``detach``)
    does not count: it cuts no width.
    """
    made = [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor) and t.grad_fn is not None]
    if not made:
        return
    for t in tree_flatten((args, kwargs))[0]:
        if isinstance(t, torch.Tensor):
            unread.pop(id(t), None)
    for t in made:  # after the pops: an in-place op returns the tensor it read
        unread[id(t)] = t


def sinks(unread: dict, outputs) -> list[torch.Tensor]:
    """The tensors of ``unread`` (`note`) that no tensor of ``outputs`` depends on: the ends of the
    dead branches. Empties ``unread``: the activations it held can go."""
    live = _ancestors([t.grad_fn for t in outputs if isinstance(t, torch.Tensor) and t.grad_fn is not None])
    dead: dict = {}
    for tensor in list(unread.values()):
        with torch._C.DisableTorchFunction():  # (the tracer's mode would note these reads)
            while tensor._base is not None:  # a write into a view (``bias[a:b].zero_()``) is one into its base
                tensor = tensor._base
            fn = tensor.grad_fn  # read now: an in-place op may have moved it since
        if fn is not None and fn not in live:
            dead.setdefault(fn, tensor)
    unread.clear()
    # An end that another end depends on is traced from that one (an in-place op hid the read).
    upstream = _ancestors([f for fn in dead for f, _ in fn.next_functions if f is not None], stop=live)
    return [tensor for fn, tensor in dead.items() if fn not in upstream]


def _ancestors(starts, stop=frozenset()) -> set:
    """Every autograd node reachable from ``starts`` (themselves included), not walking past ``stop``."""
    seen, stack = set(), [f for f in starts if f not in stop]
    while stack:
        fn = stack.pop()
        if fn in seen:
            continue
        seen.add(fn)
        stack.extend(f for f, _ in fn.next_functions if f is not None and f not in seen and f not in stop)
    return seen

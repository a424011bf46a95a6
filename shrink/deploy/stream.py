"""`compress_folder`: compress a Hugging Face folder of any size, never holding more than two of its layers.

A cut is a gather along one dim of each tensor, and the layers of a language model repeat, so the
whole model is never needed at once. The folder is compressed through a *twin*: the same
architecture with the same widths and only two layers (slots 0 and 1), built from the folder's
config and filled with real tensors read one at a time from its safetensors shards (memory-mapped).

1. Rank. The twin is traced once (cut/graph.py). A group inside one layer (an FFN, a layer's heads,
   its experts) is ranked by the engine on that layer's own weights, exactly as in memory. A group
   that spans every layer (the hidden width, read by every block) is ranked over all of them: its
   producers' ``Σ|w|^p`` are summed over slot 0 (layer 0), the parts outside the layers, and slot 1
   with each layer 1..n-1 copied in turn (importance.producing_parts); those totals are handed to
   every later trace (``Traced.known_scores``).
2. Cut and check, layer by layer. For each layer L >= 1 a fresh twin holds layers 0 and L; the
   engine chooses its steps (select, experts, uniform widths, with the full-model scores above),
   cuts them and checks the cut equals the masked original on example tokens (heal.trial). The
   cut slot-1 tensors are written as layer L's, slot 0 and the rest once (the first time).
3. Write. Tensors go into new shards (`ShardWriter`) in a temporary folder beside ``out`` with the
   cut config and the index; the written folder is then read back layer by layer (a twin built from
   the new config, its tensors read from the new shards) and must compute what each cut twin did.
   Only then does the temporary folder become ``out``: an error or Ctrl-C leaves ``out`` as it was.

The answer is the in-memory one: the same kept indices and bit-identical tensors
(tests/deploy/test_stream.py compares them on LLaMA, Qwen2 with GQA, Mixtral and GPT-2). What the
streamed path does not do: a ratio per layer, ``scope="global"`` (it pools units the twin never
sees together), data-aware rankings, and healing a layer by keeping one of its groups whole (a
config cannot describe that; the error says to compress in memory). Layers must repeat: every
layer from 1 on has the tensors, shapes and type of layer 1.
"""

from __future__ import annotations

import copy
import gc
import json
import logging
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .. import __version__
from .._util import atomic
from .._util import inputs as _inputs
from .._util.clone import emptied
from .._util.progress import progress_bar
from ..cut import graph, select
from ..cut.experts import expert_steps
from ..cut.heal import trial
from ..cut.importance import producing_parts
from ..cut.uniform import equalise
from ..errors import ShrinkValueError, UnsupportedLayerError
from ..layers import hf_config
from . import hf
from .shards import ShardWriter, Shards

log = logging.getLogger(__name__)

PLAN = "shrink_plan.json"
SLOTS = 2
# Twins after the first keep this many rows of the vocabulary: their embedding and LM head were
# written already, the widths they share are ranked beforehand, and a 128k-token table would
# otherwise be most of every twin's bytes, forward passes and cuts.
SMALL_VOCAB = 256


@dataclass(frozen=True)
class StreamReport:
    """What `compress_folder` did: sizes before and after, and what it read and wrote."""

    folder: str
    layers: int
    params_before: int
    params_after: int
    bytes_read: int
    bytes_written: int
    seconds: float
    steps: int
    config: dict = field(default_factory=dict)  # the config fields the cut changed: {name: [before, after]}

    @property
    def params_ratio(self) -> float:
        return self.params_before / max(self.params_after, 1)

    def to_dict(self) -> dict:
        return {**self.__dict__, "params_ratio": self.params_ratio}


def compress_folder(folder: str | os.PathLike, out: str | os.PathLike, *, ratio: float = 0.5, norm: int = 1,
                    overwrite: bool = False, max_shard_bytes: int = 1 << 30, seq: int = 8,
                    progress: bool = False, trace_timeout: float | None = 180.0) -> StreamReport:
    """Compress the Hugging Face model in ``folder`` into ``out`` without loading it whole.

    Args:
        folder: a folder ``save_pretrained`` wrote: ``config.json`` and safetensors weights.
        out: the folder to write (a Hugging Face folder ``from_pretrained`` loads); it must not exist
            unless ``overwrite=True``.
        ratio: fraction of each layer's units removed (hidden width, FFN, heads, experts), 0 <= ratio < 1.
        norm: 1 (L1, the default) or 2: the norm units are ranked by, as `shrink.compress`.
        max_shard_bytes: about how large each written shard is.
        seq: length of the example token sequence each layer's cut is checked on.
        progress: show a progress bar (one step per layer).

    Returns:
        A `StreamReport`. Memory: two layers and the parts outside the layers, plus one shard
        being written, whatever the size of the folder (benchmarks/results/scale.md).

    Raises:
        ShrinkError: a missing or truncated shard, layers that do not repeat, a cut that fails its
        check (compress that model in memory: `shrink.compress` can keep the failing group whole).
    """
    from ..cut.compress import check_options

    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)):
        raise ShrinkValueError(f"ratio must be one number for every layer in a streamed compress; got {ratio!r}. "
                               "A ratio per layer needs shrink.compress on the model in memory.")
    check_options(ratio, "local", norm, "trained", None)
    started = time.perf_counter()
    source = Path(folder)
    if not (source / "config.json").is_file():
        raise ShrinkValueError(f"{str(source)!r} has no config.json: pass a folder save_pretrained wrote")
    shards = Shards(source)
    twin = Twin(source, shards)
    inputs = twin.example_inputs(seq)
    known = _rank_spanning_groups(twin, inputs, norm, trace_timeout)
    with atomic.atomic_folder(out, overwrite=overwrite, hint="pass overwrite=True (--overwrite)") as tmp:
        writer = ShardWriter(tmp, max_shard_bytes)
        cut = _cut_layers(twin, inputs, known, ratio, norm, trace_timeout, writer, progress)
        names = writer.close()
        config = twin.full_config(cut.config)
        config.save_pretrained(str(tmp))
        copied = hf._copy_processor_files(source, tmp)
        _read_back(tmp, cut, inputs)
        before = _count(shards)
        after = _count(Shards(tmp))
        changed = {k: [v, config.to_dict().get(k)] for k, v in twin.config.to_dict().items()
                   if isinstance(v, (int, float)) and config.to_dict().get(k) != v}
        doc = {"shrink_version": __version__, "torch_version": torch.__version__, "source": str(source),
               "copied": copied, "saved_as": "huggingface", "streamed": True, "shards": names,
               "settings": {"ratio": ratio, "scope": "local", "norm": norm, "importance": f"l{norm}",
                            "reinit": "trained", "uniform": True},
               "params": {"before": before, "after": after}, "config_changed": changed,
               "steps": [s.to_dict() for s in cut.steps], "kept": dict(sorted(cut.kept.items()))}
        (tmp / PLAN).write_text(json.dumps(doc, indent=1))
        written = writer.bytes
    report = StreamReport(folder=str(out), layers=twin.layers, params_before=before, params_after=after,
                          bytes_read=shards.read, bytes_written=written, seconds=time.perf_counter() - started,
                          steps=len(cut.steps), config=changed)
    log.info("streamed %s -> %s: %d -> %d params, %d layers", source, out, before, after, twin.layers)
    return report


class Twin:
    """Builds two-layer twins of the folder's model, filled from its shards (see the module docstring)."""

    def __init__(self, folder: Path, shards: Shards):
        import transformers

        self.config = transformers.AutoConfig.from_pretrained(str(folder))
        arch = (getattr(self.config, "architectures", None) or [None])[0]
        self.cls = getattr(transformers, arch, None) if arch else None
        if self.cls is None:
            raise ShrinkValueError(f"config.json names no model class transformers has ({arch!r} in 'architectures'); "
                                   "save the model with save_pretrained, which writes it")
        self.shards = shards
        self.dtype = shards.dtype()
        self.layers = int(getattr(self.config, "num_hidden_layers", 0) or 0)
        self.vocab = int(getattr(self.config, "vocab_size", 0) or 0)
        self.prefix = _layer_prefix(shards.keys(), self.layers)
        self.slots = min(SLOTS, self.layers)
        self._check_repeats()

    def _check_repeats(self) -> None:
        """Every layer from 1 on must have layer 1's tensors and shapes (the twin's slot 1 stands for them)."""
        if self.layers <= SLOTS:
            return
        pattern = re.compile(rf"^{re.escape(self.prefix)}\.(\d+)\.(.+)$")
        per: dict[int, dict[str, tuple]] = {}
        for k in self.shards.keys():
            m = pattern.match(k)
            if m:
                per.setdefault(int(m.group(1)), {})[m.group(2)] = self.shards.shape(k)
        for layer in range(2, self.layers):
            if per.get(layer) != per.get(1):
                a, b = set(per.get(1, {}).items()), set(per.get(layer, {}).items())
                raise UnsupportedLayerError(
                    f"layer {layer} of {self.prefix!r} differs from layer 1 ({sorted(a ^ b)[:2]}): a streamed "
                    "compress needs layers that repeat. Compress this model in memory with shrink.compress.")
        for key, value in self.config.to_dict().items():
            if isinstance(value, list) and len(value) == self.layers and any(v != value[1] for v in value[1:]):
                raise UnsupportedLayerError(
                    f"config {key!r} differs between layers ({value[:4]}...): a streamed compress needs layers "
                    "that repeat. Compress this model in memory with shrink.compress.")

    def twin_config(self, config=None):
        """``config`` (default: the folder's) with two layers, per-layer lists cut to two entries."""
        config = copy.deepcopy(self.config if config is None else config)
        for key, value in self.config.to_dict().items():
            if isinstance(value, list) and len(value) == self.layers and hasattr(config, key):
                setattr(config, key, list(getattr(config, key))[: self.slots])
        config.num_hidden_layers = self.slots
        return config

    def full_config(self, twin_config):
        """The cut twin's config with the folder's layer count and per-layer lists back."""
        config = copy.deepcopy(twin_config)
        config.num_hidden_layers = self.layers
        for key, value in self.config.to_dict().items():
            if isinstance(value, list) and len(value) == self.layers and hasattr(config, key):
                setattr(config, key, copy.deepcopy(value))
        return config

    @property
    def small_vocab(self) -> int | None:
        """The vocabulary of a small twin (`SMALL_VOCAB`), or None where it cannot be cut down unambiguously."""
        if not 0 < SMALL_VOCAB < self.vocab:
            return None
        outside = [self.shards.shape(k) for k in self.shards.keys() if not self.in_layers(k)]
        return None if any(list(shape).count(self.vocab) > 1 for shape in outside) else SMALL_VOCAB

    def build(self, layer: int, *, shards: Shards | None = None, config=None, small: bool = False) -> nn.Module:
        """A twin whose slot 0 holds layer 0 and slot 1 layer ``layer``, every tensor read from ``shards``;
        ``small``: with the first `small_vocab` rows of the vocabulary only."""
        from transformers.initialization import no_init_weights

        gc.collect()  # the last twin and its trace hold each other: free them before this one is built
        shards = self.shards if shards is None else shards
        config = self.twin_config(config)
        vocab = self.small_vocab if small else None
        if vocab:
            config.vocab_size = vocab
            if isinstance(getattr(config, "pad_token_id", None), int) and config.pad_token_id >= vocab:
                config.pad_token_id = None  # an embedding's padding row only matters to training
        default = torch.get_default_dtype()
        torch.set_default_dtype(self.dtype)
        try:
            with no_init_weights():
                model = self.cls(config)
        finally:
            torch.set_default_dtype(default)
        if hasattr(model, "tie_weights"):
            model.tie_weights()  # skipped with the initialisation: tied heads share their embedding again
        self.fill(model, layer, shards, slots=range(self.slots), vocab=vocab)
        return model.eval()

    def file_key(self, key: str, layer: int) -> str:
        """The folder's name of the twin's tensor ``key`` when slot 1 holds ``layer``."""
        head = f"{self.prefix}.1."
        return f"{self.prefix}.{layer}." + key[len(head):] if key.startswith(head) else key

    def fill(self, model: nn.Module, layer: int, shards: Shards, *, slots, vocab: int | None = None) -> None:
        """Copy the folder's tensors into ``model``'s slots ``slots`` (and, with slot 0, the rest).

        The folder's names are the checkpoint's (Mixtral's experts one tensor each); transformers'
        own conversion of the family turns them into the model's, as ``from_pretrained`` does.
        """
        wanted = {}
        for name in shards.keys():
            slot = self.slot_in_file(name, layer)
            if slot in slots or (slot is None and 0 in slots and not self.in_layers(name)):
                rows = vocab if vocab and slot is None and shards.shape(name)[:1] == (self.vocab,) else None
                wanted[self.twin_key(name, layer)] = (lambda n=name, r=rows: shards.get(n, r))  # read when converted
        values = to_model_keys(model, wanted)
        tensors = dict(model.named_parameters(remove_duplicate=False))
        tensors.update(model.named_buffers(remove_duplicate=False))
        done: set[int] = set()
        with torch.no_grad():
            for key, value in values:  # one tensor (or one converter's few) in memory at a time
                if key not in tensors:
                    raise ShrinkValueError(f"the folder holds {key!r} (layer {layer}), which a model built from its "
                                           "config.json does not have: the config does not describe these weights")
                tensor = tensors[key]
                if vocab and not self.in_layers(key):
                    value = _first_rows(value, tuple(tensor.shape), self.vocab, vocab)
                if tuple(value.shape) != tuple(tensor.shape):
                    raise ShrinkValueError(f"{key!r} (layer {layer}) is {tuple(value.shape)} in the folder where "
                                           f"config.json builds {tuple(tensor.shape)}: the config does not describe "
                                           "these weights")
                tensor.copy_(value)
                done.add(id(tensor))
        params = dict(model.named_parameters(remove_duplicate=False))
        lost = [k for k, t in params.items() if id(t) not in done and
                (self.slot_of(k) in slots or (self.slot_of(k) is None and 0 in slots))]
        if lost:
            raise ShrinkValueError(f"the folder has no tensor for {lost[:3]} (layer {layer}): its weights do not "
                                   "match its config.json (save the model again with save_pretrained)")

    def in_layers(self, name: str) -> bool:
        return re.match(rf"^{re.escape(self.prefix)}\.\d+\.", name) is not None

    def slot_in_file(self, name: str, layer: int) -> int | None:
        """The twin slot a folder tensor goes to when slot 1 holds ``layer`` (None: outside the layers or unused)."""
        if name.startswith(f"{self.prefix}.0."):
            return 0
        if layer and name.startswith(f"{self.prefix}.{layer}."):
            return 1
        return None

    def twin_key(self, name: str, layer: int) -> str:
        head = f"{self.prefix}.{layer}."
        return f"{self.prefix}.1." + name[len(head):] if layer and name.startswith(head) else name

    def slot_of(self, key: str) -> int | None:
        for slot in range(self.slots):
            if key.startswith(f"{self.prefix}.{slot}."):
                return slot
        return None

    def example_inputs(self, seq: int) -> dict:
        vocab = self.small_vocab or int(getattr(self.config, "vocab_size", 0) or 2)
        gen = torch.Generator().manual_seed(0)
        return {"input_ids": torch.randint(0, vocab, (1, seq), generator=gen)}


def _first_rows(value: torch.Tensor, shape: tuple, vocab: int, small: int) -> torch.Tensor:
    """``value`` with only its first ``small`` entries along its vocabulary dim, where ``shape`` asks for that."""
    dims = [d for d, n in enumerate(value.shape) if n == vocab and d < len(shape) and shape[d] == small]
    return value.narrow(dims[0], 0, small) if len(dims) == 1 and value.dim() == len(shape) else value


def to_model_keys(model: nn.Module, tensors: dict):
    """Yields ``(model name, tensor)`` for checkpoint tensors ``{name: () -> tensor}``, each read only when
    its turn comes: transformers' conversion of the family, applied as ``from_pretrained`` applies it
    (renamings, then at most one converter per key)."""
    from transformers.conversion_mapping import get_model_conversion_mapping
    from transformers.core_model_loading import WeightConverter, WeightRenaming, rename_source_key

    conversions = get_model_conversion_mapping(model)
    if not conversions:
        for key, read in tensors.items():
            yield key, read()
        return
    renamings = [c for c in conversions if isinstance(c, WeightRenaming)]
    converters = [c for c in conversions if isinstance(c, WeightConverter)]
    by_pattern = {k: c for c in converters for k in c.source_patterns}
    mapping: dict = {}
    for key in sorted(tensors, key=_natural):
        renamed, pattern = rename_source_key(key, renamings, converters)
        if pattern is not None:
            entry = mapping.setdefault(renamed, copy.deepcopy(by_pattern[pattern]))
        else:
            entry = mapping.setdefault(renamed, WeightRenaming(key, renamed))
            pattern = key
        entry.add_tensor(renamed, key, pattern, tensors[key])
    for first in list(mapping):
        entry = mapping.pop(first)
        for name, value in entry.convert(first, model=model, config=model.config).items():
            yield name, (value[0] if isinstance(value, list) else value)


def to_file_keys(model: nn.Module, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The model's tensors under the names ``save_pretrained`` writes (its reverse conversion)."""
    from transformers.core_model_loading import revert_weight_conversion

    return revert_weight_conversion(model, tensors)


def _natural(key: str):
    return [int(p) if p.isdigit() else p for p in key.split(".")]


def _layer_prefix(keys: list[str], layers: int) -> str:
    """The name the folder's layers sit under (``model.layers``, ``transformer.h``): n indices 0..n-1."""
    found: dict[str, set[int]] = {}
    for k in keys:
        for m in re.finditer(r"\.(\d+)\.", k):
            found.setdefault(k[: m.start()], set()).add(int(m.group(1)))
    fits = [p for p, idx in found.items() if idx == set(range(layers))]
    if layers < 1 or not fits:
        raise UnsupportedLayerError(f"no list of {layers} layers (config num_hidden_layers) found among the folder's "
                                    "tensor names: a streamed compress needs a model made of repeated layers")
    return min(fits, key=len)


def _rank_spanning_groups(twin: Twin, inputs, p: int, timeout) -> dict[str, torch.Tensor]:
    """Scores of the groups that span layers, summed over every layer of the folder (step 1)."""
    model = twin.build(1 if twin.layers > 1 else 0)
    traced = graph.trace(model, inputs, ignore=(), timeout=timeout)
    head = f"{twin.prefix}."
    spanning = [g for g in traced.groups if g.protected is None and len({twin.slot_of(m.name) for m in g.parts}) > 1]
    totals = {}
    for g in spanning:
        total = torch.zeros(g.width, dtype=torch.float64)
        for name, idx, part in producing_parts(traced, g, p):
            total.scatter_add_(0, idx, part)  # layer 0, layer 1 and what lies outside the layers
        totals[g.root_name] = total
    for layer in range(2, twin.layers):
        twin.fill(model, layer, twin.shards, slots=(1,))
        for g in spanning:
            for name, idx, part in producing_parts(traced, g, p):
                if name.startswith(head + "1."):
                    totals[g.root_name].scatter_add_(0, idx, part)
    return {k: v.pow(1.0 / p) for k, v in totals.items()}


@dataclass
class _Cut:
    steps: list = field(default_factory=list)
    kept: dict = field(default_factory=dict)
    outputs: dict = field(default_factory=dict)  # layer -> the cut twin's outputs on the example inputs
    small: dict = field(default_factory=dict)  # layer -> whether its twin had the small vocabulary
    config: object = None


def _cut_layers(twin: Twin, inputs, known, ratio, p, timeout, writer: ShardWriter, progress: bool) -> _Cut:
    """Step 2: cut and check each layer in a twin, writing its tensors (see the module docstring)."""
    cut = _Cut()
    first_steps = None
    layers = list(range(1, twin.layers)) or [0]
    with progress_bar(progress, len(layers), "compressing layers") as advance:
        for layer in layers:
            small = first_steps is not None  # the embedding and LM head are written with layer 1
            model = twin.build(layer, small=small)
            cut.small[layer] = small
            with torch.no_grad():
                outputs = _inputs.run(model, inputs)
            shapes = {k: v.shape for k, v in _inputs.task_outputs(_inputs.flatten_outputs(outputs)).items()}
            traced = graph.trace(model, inputs, ignore=(), timeout=timeout)
            traced.known_scores = dict(known)
            steps = select.width_steps(traced, ratio=ratio, scope="local", p=p, round_to=None)
            steps += select.head_steps(traced, ratio=ratio, scope="local", p=p)
            steps += expert_steps(model, ratio=ratio, p=p)
            steps = equalise(traced, steps, p=p, why={})
            shared = sorted((s for s in steps if _shared(twin, s, known)), key=lambda s: s.layer)
            if first_steps is not None and shared != first_steps:
                raise RuntimeError(f"layer {layer}: the steps outside slot 1 changed between twins")  # a bug here
            tracker, order, failure = trial(traced, steps, inputs, shapes, release=emptied)  # cut-away weights go
            if failure is None and hf_config.is_hf(model):
                problems = hf_config.check(model)
                failure = problems[0] if problems else None
            if failure is not None:
                raise UnsupportedLayerError(
                    f"cutting layer {layer} of {twin.prefix!r} failed its check ({getattr(failure, 'reason', failure)}): "
                    "a streamed compress cannot keep one group whole. Compress this model in memory with "
                    "shrink.compress, which keeps whole what it cannot cut.")
            with torch.no_grad():
                cut.outputs[layer] = {k: v.detach().clone() for k, v in
                                      _inputs.flatten_outputs(_inputs.run(model, inputs)).items()}
            rename = (lambda n, L=layer: twin.file_key(n, L))
            mine = [s for s in order if not _shared(twin, s, known)] if first_steps is not None else order
            cut.steps += [type(s)(s.op, rename(s.layer), s.dim, s.removed, rename(s.partner) if s.partner else "")
                          for s in mine]
            slots = (1,) if first_steps is not None else tuple(range(twin.slots))
            for name, kept in tracker.kept.items():
                if twin.slot_of(name + ".") in slots or (0 in slots and twin.slot_of(name + ".") is None):
                    cut.kept[rename(name)] = kept
            for name, tensor in to_file_keys(model, _picked(twin, model, slots)).items():
                writer.add(twin.file_key(name, layer), tensor)
            if first_steps is None:
                first_steps, cut.config = shared, copy.deepcopy(model.config)
            elif _widths(model.config) != _widths(cut.config):
                raise RuntimeError(f"layer {layer}: the cut config differs from layer 1's")  # a bug here
            del traced, model, tracker
            gc.collect()
            advance(f"layer {layer}")
    return cut


def _picked(twin: Twin, model: nn.Module, slots) -> dict[str, torch.Tensor]:
    """The state of ``model``'s slots ``slots`` (slot 0 with what lies outside the layers), a tied tensor
    once (under its first name, as ``save_pretrained`` keeps it)."""
    picked, seen = {}, set()
    for key, tensor in model.state_dict().items():
        slot = twin.slot_of(key)
        if not (slot in slots or (slot is None and 0 in slots)):
            continue
        where = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape))
        if where not in seen:
            seen.add(where)
            picked[key] = tensor
    return picked


def _shared(twin: Twin, step, known) -> bool:
    """A step every twin takes alike: a group spanning the layers, or one in slot 0 or outside the layers."""
    return step.layer in known or twin.slot_of(step.layer + ".") != 1


def _widths(config) -> dict:
    """A config's fields but those a small twin changes."""
    return {k: v for k, v in config.to_dict().items() if k not in ("vocab_size", "pad_token_id")}


def _read_back(folder: Path, cut: _Cut, inputs) -> None:
    """The written folder, a layer at a time, computes what each cut twin did (step 3)."""
    shards = Shards(folder)
    twin = Twin(folder, shards)
    for layer, want in cut.outputs.items():
        model = twin.build(layer, small=cut.small[layer])
        with torch.no_grad():
            got = _inputs.flatten_outputs(_inputs.run(model, inputs))
        differs = [k for k, w in want.items() if k not in got or got[k].shape != w.shape or not hf._close(got[k], w)]
        if differs:
            raise ShrinkValueError(f"the written folder, read back with layers 0 and {layer}, computes other "
                                   f"{differs[:3]} than the cut model did; nothing was written to the output")
        del model


def _count(shards: Shards) -> int:
    return sum(_numel(shards.shape(k)) for k in shards.keys())


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n

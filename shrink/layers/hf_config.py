"""Hugging Face configs: make a cut `PreTrainedModel`'s ``config`` describe its new sizes.

A standard config holds one width per kind for all layers (hidden size, FFN width, heads,
key/value heads, head dim), under each family's own names (``n_embd``/``n_inner``/``n_head`` for
GPT-2, ``ffn_dim`` for OPT, ``d_ff``/``d_kv``/``num_heads`` for T5, ...). After a cut, shrink
measures those widths on the model itself and writes them under every name the config has,
then proves the result: a model built from the new config (on the meta device, no memory) must
have exactly the cut model's parameter shapes, or `check` says which ones differ.
"""

from __future__ import annotations

import copy
import logging
import re
from types import MappingProxyType

import torch
from torch import nn

from . import hf_derived, hf_lists, hf_moe
from .attention import find_blocks
from .rows import is_hf_conv1d, out_rows

log = logging.getLogger(__name__)

# Layers whose outputs are a feed-forward block's hidden units, by the end of their qualified name.
FFN_IN = re.compile(
    r"(intermediate\.dense|mlp\.c_fc|(^|\.)fc1|mlp\.gate_proj|mlp\.up_proj|DenseReluDense\.wi(_0)?|ffn\.lin1"
    r"|mlp\.dense_h_to_4h|mlp\.fc_in|mlp\.w1"
    # speech encoders: wav2vec2/HuBERT/WavLM/SEW, the conformers' two half-step FFNs (Parakeet)
    r"|(feed_forward|ffn[12])\.intermediate_dense|feed_forward[12]?\.linear1"
    # gated FFNs under other parent names (Jamba, Bamba, Pixtral, AIMv2, RecurrentGemma, LFM)
    r"|(feed_forward|ffn|mlp_block)\.(gate_proj|up_proj)|feed_forward\.w[13]"
    r"|mlp\.linear_fc1|mlp\.wi|feed_forward\.intermediate|intermediate_query\.dense"
    # XLNet's ff.layer_1, Funnel's ffn.linear_1, CTRL's Sequential ffn.0
    r"|ff\.layer_1|ffn\.linear_1|ffn\.0)$"
)
# A fused gate/up layer writes [gate | up]: two rows per hidden unit (Phi-3's gate_up_proj; cut/units.py).
FFN_FUSED = re.compile(r"mlp\.gate_up_proj$")
# Config names of each measured width; "encoder."/"decoder." limit a name to that half of the model.
FIELDS = MappingProxyType({
    "hidden": ("hidden_size", "n_embd", "d_model", "dim", "embed_dim", "word_embed_proj_dim", "embedding_size"),
    "heads": ("num_attention_heads", "n_head", "num_heads", "n_heads"),
    "encoder.heads": ("encoder_attention_heads",),
    "decoder.heads": ("decoder_attention_heads",),
    "kv_heads": ("num_key_value_heads", "num_kv_heads"),
    "head_dim": ("head_dim", "d_kv"),
    "ffn": ("intermediate_size", "n_inner", "ffn_dim", "d_ff", "hidden_dim", "ffn_hidden_size", "dff", "d_inner"),
    "encoder.ffn": ("encoder_ffn_dim",),
    "decoder.ffn": ("decoder_ffn_dim",),
    # Each expert's FFN, where the config has a field of its own for it (Qwen2-MoE's moe_intermediate_size;
    # Mixtral's experts are intermediate_size wide, so there they count as "ffn").
    "expert_ffn": ("moe_intermediate_size", "expert_intermediate_size"),
})


def view(model: nn.Module) -> str | None:
    """The sub-config that states this model's widths, where its own config nests them (CLIP's and
    SigLIP's image classifiers read ``config.vision_config``): the one sub-config whose hidden size
    changes the model's shapes (built on the meta device). None: the config itself states them."""
    config = model.config
    if any(n in vars(config) for names in FIELDS.values() for n in names):
        return None
    subs = [k for k, v in vars(config).items() if hasattr(v, "to_dict") and not k.startswith("_")
            and any(isinstance(vars(v).get(n), int) for n in FIELDS["hidden"])]
    if not subs:
        return None
    try:
        with torch.device("meta"):
            base = {k: tuple(t.shape) for k, t in type(model)(config).state_dict().items()}
    except Exception:  # noqa: BLE001 - a family's __init__ may reject a config in many ways
        return None
    used = []
    for name in subs:
        changed = copy.deepcopy(config)
        sub = getattr(changed, name)
        for field in FIELDS["hidden"]:
            if isinstance(vars(sub).get(field), int):
                setattr(sub, field, 2 * getattr(sub, field))
        try:
            with torch.device("meta"):
                shapes = {k: tuple(t.shape) for k, t in type(model)(changed).state_dict().items()}
        except Exception:  # noqa: BLE001
            continue
        if shapes != base:
            used.append(name)
    return used[0] if len(used) == 1 else None


def fields(config, name: str | None):
    """``config`` itself, or its sub-config ``name`` (`view`)."""
    return getattr(config, name) if name else config


def is_hf(model: nn.Module) -> bool:
    """A transformers `PreTrainedModel` (checked by duck type: transformers stays optional)."""
    return hasattr(model, "config") and hasattr(model, "save_pretrained") and hasattr(model.config, "to_dict")


def _part(name: str) -> str:
    return "decoder" if "decoder." in name else "encoder" if "encoder." in name else ""


def measure(model: nn.Module, blocks=None) -> dict[str, set[int]]:
    """Every width per kind, as the model's layers now are ({kind: values seen across layers}).

    ``blocks``: the model's attention blocks, when known (after a cut, head counts are no longer
    readable from a config that still holds the old ones).
    """
    sizes: dict[str, set[int]] = {}

    def add(kind: str, part: str, value: int) -> None:
        sizes.setdefault(kind, set()).add(int(value))
        if part:
            sizes.setdefault(f"{part}.{kind}", set()).add(int(value))

    for block in find_blocks(model) if blocks is None else blocks:
        part = _part(block.name)
        add("heads", part, block.num_heads)
        add("kv_heads", part, block.num_kv_heads)
        add("head_dim", part, block.head_dim)
        q = block.q
        add("hidden", part, q.weight.shape[0] if is_hf_conv1d(q) else q.weight.shape[1])
    for name, module in model.named_modules():
        fused = FFN_FUSED.search(name)
        if FFN_IN.search(name) or fused:
            rows = out_rows(module)
            if rows is not None:
                add("ffn", _part(name), rows.shape[0] // 2 if fused else rows.shape[0])
    config = getattr(model, "config", None)
    own_field = config is not None and any(n in vars(config) for n in FIELDS["expert_ffn"])
    for name, experts in hf_moe.expert_blocks(model):  # every expert's FFN
        add("expert_ffn" if own_field else "ffn", _part(name), hf_moe.width(experts))
    return sizes


def nonuniform(sizes: dict[str, set[int]]) -> dict[str, list[int]]:
    """The kinds whose layers disagree (a standard config cannot say that)."""
    return {kind: sorted(values) for kind, values in sizes.items() if len(values) > 1}


def describe(model: nn.Module, before: dict[str, set[int]], blocks=None) -> list[str]:
    """Write the model's measured widths into ``model.config``; returns what could not be described.

    ``before``: `measure` of the model before cutting; only names whose value was one of the
    measured widths then are rewritten (``embed_dim`` of Swin is a stage's width, not every one).
    """
    config = fields(model.config, view(model))
    after = measure(model, blocks)
    # Kinds of several widths before (Swin's stages) are derived by the config from other fields;
    # check() below says whether it derives them right.
    problems = [f"{kind} differs between layers: {values}" for kind, values in sorted(nonuniform(after).items())
                if len(before.get(kind, ())) <= 1]
    if problems:
        return problems
    mapped = getattr(config, "attribute_map", {}) or {}
    hf_derived.state_literally(config, FIELDS, before, after)  # LFM2 adjusts its FFN field on build
    for kind, names in FIELDS.items():
        if kind not in after or len(before.get(kind, ())) != 1:
            continue  # not measured, or several widths then (Swin's stages): the config derives them
        old, new = next(iter(before[kind])), next(iter(after[kind]))
        for name in names:
            value = getattr(config, name, None) if hasattr(config, name) else None
            if name in mapped and mapped[name] in names:
                continue  # an alias of a name set in this loop
            if value == old or (value is None and kind == "ffn" and name in vars(config)):
                try:
                    setattr(config, name, new)
                except AttributeError:
                    continue  # a read-only property derived from the other fields (Falcon's head_dim)
    field = ffn_ratio_field(model)
    ratio = ratio_for_widths([(u, w) for _, u, w in ffn_layers(model)]) if field else None
    if ratio is not None:  # Swin: int(mlp_ratio * dim) units in every stage
        if isinstance(getattr(config, field), int) and float(ratio).is_integer():
            ratio = int(ratio)  # DINOv2 declares an int field (and validates it)
        setattr(config, field, ratio)
    one_head_dim = len(after.get("head_dim", ())) == 1 and len(after.get("heads", ())) == 1  # not Swin's stages
    if one_head_dim and getattr(config, "head_dim", None) is None:
        try:  # state it: families that read config.head_dim otherwise derive it from the hidden size
            config.head_dim = next(iter(after["head_dim"]))
        except AttributeError:
            pass
    blocks = find_blocks(model) if blocks is None else blocks
    if len(before.get("heads", ())) > 1 and blocks:  # head counts stated per stage (SegFormer's)
        hf_lists.write_heads(model, {b.name: b.num_heads for b in blocks})
    problems = check(model)
    if problems:  # widths stated per stage (ResNet's hidden_sizes): the values the shapes show
        hf_lists.write_back(model)
        problems = check(model)
    return problems


def built_shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    """{state_dict key: shape} of the model ``model.config`` builds (on the meta device); {} if it fails."""
    try:
        with torch.device("meta"):
            fresh = type(model)(model.config)
    except Exception:  # noqa: BLE001 - a family's __init__ may reject a config in many ways
        return {}
    return {k: tuple(v.shape) for k, v in fresh.state_dict().items()}


def wrong_tensors(model: nn.Module) -> list[str]:
    """The state_dict keys whose shape a model built from ``model.config`` gets wrong."""
    expected = built_shapes(model)
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    return sorted(k for k in got if k in expected and expected[k] != got[k])


def check(model: nn.Module) -> list[str]:
    """Parameter shapes a model built from ``model.config`` would get wrong (empty: the config is right)."""
    try:
        with torch.device("meta"):
            fresh = type(model)(model.config)
    except Exception as exc:  # noqa: BLE001 - a family's __init__ may reject a config in many ways
        return [f"{type(model).__name__}(config) fails: {type(exc).__name__}: {exc}"]
    expected = {k: tuple(v.shape) for k, v in fresh.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    wrong = sorted(k for k in got if k in expected and expected[k] != got[k])
    missing = sorted(set(got) ^ set(expected))
    problems = [f"{k}: the config builds {expected[k]}, the model has {got[k]}" for k in wrong] + (
        [f"parameters only on one side: {missing[:5]}"] if missing else [])
    if problems:  # say why first, when layers of one kind were cut to different widths
        sizes = nonuniform(measure(model))
        problems = [f"{kind} differs between layers: {v}" for kind, v in sorted(sizes.items())] + problems
    return problems


def expressible(model: nn.Module) -> set[str]:
    """The kinds of width ("hidden", "ffn", "heads") the model's config has a field for.

    BLOOM's FFN is always 4 x hidden, Whisper's input convolutions follow d_model: a uniform cut
    of a Hugging Face model only narrows what its config can say.
    """
    if not is_hf(model):
        return {"hidden", "ffn", "heads", "other"}
    config, kinds = fields(model.config, view(model)), set()
    for kind in ("hidden", "ffn", "heads"):
        names = [n for k, ns in FIELDS.items() if k.endswith(kind) for n in ns]
        if any(n in vars(config) or n in (getattr(config, "attribute_map", {}) or {}) for n in names):
            kinds.add(kind)
    if ffn_ratio_field(model):
        kinds.add("ffn")
    return kinds


def follow_hidden(model: nn.Module, names: list[str]) -> set[str]:
    """Of the layers ``names``, those whose output width the config builds from the hidden size.

    A classifier head's inner layer (BERT's ``pooler.dense``, DistilBERT's ``pre_classifier``,
    RoBERTa's ``classifier.dense``) is ``Linear(hidden, hidden)`` in every config: after a cut of
    the hidden width its output must be that wide too, though nothing in the graph couples it to
    the residual stream. Found by building the model with the hidden size doubled (on the meta
    device, no memory) and seeing whose rows double.
    """
    if not is_hf(model) or not names:
        return set()
    top = copy.deepcopy(model.config)
    config = fields(top, view(model))
    mapped = getattr(config, "attribute_map", {}) or {}  # XLM: hidden_size -> emb_dim
    sizes = {(n := mapped.get(name, name)): vars(config).get(n)
             for name in ("hidden_size", "n_embd", "d_model", "dim", "embed_dim")}
    sizes = {name: v for name, v in sizes.items() if isinstance(v, int) and not isinstance(v, bool)}
    if not sizes:
        return set()
    for name, value in sizes.items():
        setattr(config, name, 2 * value)
    try:
        with torch.device("meta"):
            fresh = type(model)(top)
    except Exception:  # noqa: BLE001 - a config that rejects the doubled size says nothing either way
        return set()
    found = set()
    for name in names:
        try:
            old, new = out_rows(model.get_submodule(name)), out_rows(fresh.get_submodule(name))
        except AttributeError:
            continue
        if old is not None and new is not None and new.shape[0] == 2 * old.shape[0]:
            found.add(name)
    return found


def ffn_ratio_field(model: nn.Module) -> str | None:
    """The config field that states every FFN width as a ratio of its layer's width (Swin's
    ``mlp_ratio``: fc1 has ``int(mlp_ratio * dim)`` units), where there is no FFN width field."""
    config = getattr(model, "config", None)
    if config is None or any(n in vars(config) for k, ns in FIELDS.items() if k.endswith("ffn") for n in ns):
        return None
    value = getattr(config, "mlp_ratio", None)
    return "mlp_ratio" if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def ffn_layers(model: nn.Module) -> list[tuple[str, int, int]]:
    """(name, FFN units, layer width) of every FFN's first layer."""
    out = []
    for name, module in model.named_modules():
        rows = out_rows(module) if FFN_IN.search(name) else None
        if rows is not None and rows.dim() == 2:
            out.append((name, int(rows.shape[0]), int(rows.shape[1])))
    return out


def ratio_for_widths(pairs: list[tuple[int, int]]) -> float | None:
    """The one ratio r with int(r * width) == units for every (units, width), read off the narrowest layer."""
    if not pairs:
        return None
    units, width = min(pairs, key=lambda p: p[1])
    r = units / width
    return r if all(int(r * w) == u for u, w in pairs) else None


def head_dim_follows_hidden(model: nn.Module, blocks: list | None = None) -> bool:
    """Whether the family computes head_dim as hidden size / heads (BERT, GPT-2, ViT: no head_dim field).

    Found by building the model from its config with the hidden size doubled and head_dim
    stated (on the meta device) and looking whether the first attention block's query width
    doubled too.
    """
    if not is_hf(model):
        return False
    blocks = find_blocks(model) if blocks is None else blocks
    sizes = measure(model, blocks)
    if not blocks:
        return False
    if len(sizes.get("hidden", ())) > 1:  # stages of several widths sharing one head count (MobileViT):
        return getattr(model.config, "head_dim", None) is None  # tied unless the config states head_dim
    hidden = next(iter(sizes["hidden"]))
    top = copy.deepcopy(model.config)
    config = fields(top, view(model))
    for name in FIELDS["hidden"]:
        if _get(config, name) == hidden:
            setattr(config, name, 2 * hidden)
    if _get(config, "head_dim") is None:
        try:  # a family that reads config.head_dim when given one is not tied (Mixtral, Phi, Qwen2)
            config.head_dim = blocks[0].head_dim
        except Exception:  # noqa: BLE001 - AttributeError, or a per-layer config's refusal (Gemma 4)
            return True
    try:
        with torch.device("meta"):
            fresh = type(model)(top)
        q = dict(fresh.named_modules())[f"{blocks[0].name}.{_child_name(blocks[0])}"]
    except Exception:  # noqa: BLE001 - a config it cannot build: assume the safe, tied case
        return True
    return out_rows(q).shape[0] != out_rows(blocks[0].q).shape[0]


def _get(config, name: str):
    """``getattr(config, name, None)``, also None where a config refuses the global value (Gemma 4's
    per-layer configs raise AmbiguousGlobalPerLayerAttributeError for ``head_dim``)."""
    try:
        return getattr(config, name, None)
    except Exception:  # noqa: BLE001
        return None


def _child_name(block) -> str:
    return next(n for n, m in block.module.named_children() if m is block.q)

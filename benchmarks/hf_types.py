"""Every model type transformers can build here: compress, reload, ONNX parity, at default settings.

The types come from transformers' auto mappings (``MODEL_FOR_*_MAPPING_NAMES``). Each type gets
its usual fine-tuning head, first match of: seq2seq LM (encoder-decoders), sequence
classification (encoders: types with a masked-LM head), causal LM (decoders), sequence
classification, image classification, audio classification, CTC, semantic segmentation, the base
``AutoModel``. Multimodal types (image-text-to-text, multimodal LM) are not swept; they are listed.

Each model is built from ``AutoConfig.for_model(type)`` with its size fields made small (`small`),
random weights, default attention, and one example row for its main input. Per type, in a
forked child with a time limit: ``shrink.compress(model, inputs, ratio=0.5)``, parameters
before/after, the groups kept whole and why, ``shrink.save_pretrained`` and ``from_pretrained``
back (max abs diff against the in-memory compressed model), ``shrink.export_onnx`` (parity at
batches 1 and 3), seconds. A type that cannot be built or run here is listed with the reason.
Writes benchmarks/results/hf_types.{md,json} (rows are appended to a .partial.jsonl as they come).

    python benchmarks/hf_types.py                      # everything (long: run it in the background)
    python benchmarks/hf_types.py --types bert gpt2 --out /tmp/x
    python benchmarks/hf_types.py --limit 20 --timeout 120
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import re
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

# (label, mapping) in the order a type's head is picked; "encoder" needs a masked-LM head too.
HEADS = (
    ("seq2seq LM", "MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES"),
    ("speech seq2seq", "MODEL_FOR_SPEECH_SEQ_2_SEQ_MAPPING_NAMES"),
    ("encoder: sequence classification", "MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES"),
    ("causal LM", "MODEL_FOR_CAUSAL_LM_MAPPING_NAMES"),
    ("sequence classification", "MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES"),
    ("image classification", "MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES"),
    ("audio classification", "MODEL_FOR_AUDIO_CLASSIFICATION_MAPPING_NAMES"),
    ("CTC", "MODEL_FOR_CTC_MAPPING_NAMES"),
    ("semantic segmentation", "MODEL_FOR_SEMANTIC_SEGMENTATION_MAPPING_NAMES"),
    ("base", "MODEL_MAPPING_NAMES"),
)
MULTIMODAL = ("MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES", "MODEL_FOR_MULTIMODAL_LM_MAPPING_NAMES")

# Small sizes, written only where the default config has the field (and is larger).
WIDTH, HEADS_N, FFN, LAYERS, VOCAB, IMAGE, POSITIONS = 64, 4, 128, 2, 256, 64, 128
FIELDS = (  # (value, names): pairs, not a dict, since several sizes share a value
    (WIDTH, ("hidden_size", "n_embd", "d_model", "embed_dim", "n_embed", "d_embed", "word_embed_proj_dim", "dim", "pooler_hidden_size",
             "model_dim", "emb_dim")),
    (32, ("embedding_size", "projection_dim", "proj_dim", "d_inner_hid", "kv_lora_rank", "q_lora_rank")),
    (16, ("qk_nope_head_dim", "v_head_dim", "d_head")),  # multi-head latent attention (DeepSeek); XLNet: d_model // n_head
    (8, ("qk_rope_head_dim",)),
    (HEADS_N, ("num_attention_heads", "n_head", "num_heads", "n_heads", "encoder_attention_heads",
               "decoder_attention_heads", "num_attention_heads_per_layer")),
    (FFN, ("intermediate_size", "n_inner", "ffn_dim", "encoder_ffn_dim", "decoder_ffn_dim", "d_ff", "d_inner",
           "ffn_hidden_size", "dff", "moe_intermediate_size", "shared_expert_intermediate_size", "expert_intermediate_size")),
    (LAYERS, ("num_hidden_layers", "n_layer", "num_layers", "n_layers", "encoder_layers", "decoder_layers",
              "num_decoder_layers", "num_encoder_layers")),
    (VOCAB, ("vocab_size", "entity_vocab_size")),
    (POSITIONS, ("max_position_embeddings", "n_positions", "max_target_positions", "n_ctx", "max_seq_len",
                 "max_sequence_length", "max_encoder_position_embeddings", "max_decoder_position_embeddings")),
    (IMAGE, ("image_size",)),
    (4, ("num_local_experts", "num_experts", "n_routed_experts")),
    (2, ("num_experts_per_tok", "num_selected_experts", "top_k")),
    (1, ("n_shared_experts", "num_shared_experts", "n_group", "topk_group")),  # one routing group of 4 experts
)


def _names(value: int) -> tuple[str, ...]:
    return next(names for v, names in FIELDS if v == value)


# Per-stage lists (vision backbones): widths scaled down together, depths one block each.
WIDTH_LISTS = ("hidden_sizes", "embed_dims", "dims", "widths", "embedding_dims", "neck_hidden_sizes",
               "decoder_hidden_sizes", "channels", "hidden_dims", "stage_dims")
HEAD_LISTS = ("num_heads", "num_attention_heads", "heads")
DEPTH_LISTS = ("depths", "num_layers", "layers", "blocks_per_stage", "num_blocks")
SEQ, AUDIO_SAMPLES = 16, 4000


def small(config):
    """The default config with its size fields made small (sub-configs too); returns the config."""
    from transformers import PretrainedConfig

    values = vars(config)
    stages = {len(values[n]) for n in DEPTH_LISTS if _int_list(values.get(n))}  # Swin's num_layers = len(depths)
    layers_before = {values[n] for n in _names(LAYERS) if isinstance(values.get(n), int) and values[n] > LAYERS
                     and values[n] not in stages}
    for value, names in FIELDS:
        for name in names:
            old = values.get(name)
            if value == LAYERS and old in stages:
                continue
            if isinstance(old, int) and not isinstance(old, bool) and old > value:
                setattr(config, name, value)
    heads, kv = values.get("num_attention_heads"), values.get("num_key_value_heads")
    if isinstance(kv, int) and isinstance(heads, int):
        config.num_key_value_heads = 2 if kv < heads or kv == 1 else heads  # GQA stays GQA, MHA stays MHA
    if isinstance(values.get("head_dim"), int) and isinstance(heads, int):
        width = next((values[n] for n in _names(WIDTH) if isinstance(values.get(n), int)), WIDTH)
        config.head_dim = max(width // heads, 8)
    widths = [values[n] for n in WIDTH_LISTS if _int_list(values.get(n))]
    if widths:
        base = min(widths[0])
        scale = max(base // 16, 1)
        for name in WIDTH_LISTS:
            if _int_list(values.get(name)):
                setattr(config, name, [max(v // scale, 8) for v in values[name]])
        heads_n = values.get("num_attention_heads")
        if isinstance(heads_n, int) and heads_n > 1:  # one head count for every stage: widths stay its multiples
            for name in WIDTH_LISTS:
                if _int_list(values.get(name)) and any(v % heads_n for v in values[name]):
                    setattr(config, name, [-(-v // heads_n) * heads_n for v in values[name]])
    for name in HEAD_LISTS:  # per-stage head counts from 1 up, in the same proportions
        if _int_list(values.get(name)):
            first = values[name][0]
            setattr(config, name, [max(v // first, 1) for v in values[name]])
    for name in DEPTH_LISTS:
        if _int_list(values.get(name)):
            setattr(config, name, [1] * len(values[name]))
    for name in ("conv_dim",):  # wav2vec2-style feature encoders
        if _int_list(values.get(name)):
            setattr(config, name, [32] * len(values[name]))
    if isinstance(values.get("num_conv_pos_embeddings"), int):
        config.num_conv_pos_embeddings, config.num_conv_pos_embedding_groups = 16, 4
    window = values.get("attention_window")  # Longformer/LED pad every input to a multiple of it (512)
    if isinstance(window, int) or _int_list(window):
        config.attention_window = 8 if isinstance(window, int) else [8] * len(window)
    if isinstance(values.get("window_size"), int) and values["window_size"] > 2:
        config.window_size = 2  # Swin-style windows: every stage of a 64-pixel image holds whole windows
    if isinstance(values.get("image_size"), (list, tuple)):
        config.image_size = [IMAGE] * len(values["image_size"])
    if isinstance(values.get("max_source_positions"), int) and "num_mel_bins" in values:
        config.max_source_positions = 32  # Whisper: input frames are twice this
    _fit_token_ids(config)
    for name, value in list(values.items()):
        if isinstance(value, PretrainedConfig):
            setattr(config, name, small(value))
    if hasattr(config, "num_labels"):
        config.num_labels = 3
    return _rebuilt(config, layers_before)


def _rebuilt(config, layers_before: set[int]):
    """The config built again from its fields, with its per-layer lists (``layer_types``) as long
    as the new layer count: the first entries and the first other kind (a hybrid keeps one
    attention layer, an MoE one sparse layer), or else derived again by the config."""
    fields = config.to_dict()
    derived = {k: v for k, v in fields.items() if isinstance(v, list) and len(v) in layers_before}
    shortened = {k: _layers_of_each_kind(v) for k, v in derived.items()}
    if layers_before:  # a backbone's stage names follow the layer count (BEiT's out_features=['stage12'])
        derived.update({k: None for k in ("out_features", "out_indices", "stage_names") if k in fields})
    for lists in (shortened, {}):
        try:
            return type(config)(**{k: v for k, v in fields.items() if k not in derived}, **lists)
        except Exception:  # noqa: BLE001 - try the next way
            continue
    for k in derived:  # a config that does not rebuild keeps its fields, lists cut short
        setattr(config, k, getattr(config, k)[:LAYERS])
    return config


def _layers_of_each_kind(values: list) -> list:
    other = next((v for v in values[LAYERS - 1:] if v not in values[:LAYERS - 1]), values[LAYERS - 1])
    return [*values[:LAYERS - 1], other]


def _int_list(value) -> bool:
    return isinstance(value, (list, tuple)) and bool(value) and all(
        isinstance(v, int) and not isinstance(v, bool) for v in value)


def _fit_token_ids(config) -> None:
    """Special token ids of a large vocabulary, moved inside the small one (distinct ids, from the top)."""
    vocab = vars(config).get("vocab_size")
    if not isinstance(vocab, int):
        return
    free = iter(range(vocab - 1, 0, -1))
    for name, value in list(vars(config).items()):
        if not name.endswith("token_id"):
            continue
        if isinstance(value, int) and value >= vocab:
            setattr(config, name, next(free))
        elif _int_list(value) and any(v >= vocab for v in value):
            setattr(config, name, [v if v < vocab else next(free) for v in value])


def pick_heads(only: list[str] | None = None) -> tuple[dict[str, tuple[str, str]], dict[str, str]]:
    """{type: (head label, class name)} to sweep, and {type: why not swept}."""
    import transformers.models.auto.modeling_auto as auto

    mappings = {m: getattr(auto, m) for _, m in HEADS}
    masked = auto.MODEL_FOR_MASKED_LM_MAPPING_NAMES
    multimodal = set().union(*(getattr(auto, m) for m in MULTIMODAL))
    types = sorted(set().union(*mappings.values()))
    chosen, skipped = {}, {}
    for t in only or types:
        if t in multimodal:
            skipped[t] = "multimodal (image-text-to-text / multimodal LM)"
            continue
        for label, m in HEADS:
            if t in mappings[m] and (not label.startswith("encoder") or t in masked):
                name = mappings[m][t]
                chosen[t] = (label, name[0] if isinstance(name, (tuple, list)) else name)
                break
        else:
            skipped[t] = "in no model mapping"
    return chosen, skipped


class OutOfScope(Exception):
    """A type whose main input is none of text, image or audio (time series, video, graphs)."""


def example_inputs(model, config) -> dict:
    """One example row for the model's main input, plus decoder ids for an encoder-decoder."""
    import torch

    g = torch.Generator().manual_seed(0)
    main = getattr(model, "main_input_name", "input_ids")
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    vocab = int(getattr(text, "vocab_size", None) or VOCAB)
    if main == "input_ids":
        x = {"input_ids": torch.randint(3, vocab, (1, SEQ), generator=g)}
    elif main == "pixel_values":
        vision = getattr(config, "vision_config", None) or config
        size = getattr(vision, "image_size", IMAGE)
        size = tuple(size)[-2:] if isinstance(size, (list, tuple)) else (size, size)
        x = {"pixel_values": torch.randn(1, getattr(vision, "num_channels", 3), *size, generator=g)}
    elif main == "input_values":
        x = {"input_values": torch.randn(1, AUDIO_SAMPLES, generator=g)}
    elif main == "input_features":
        if hasattr(config, "num_mel_bins") and hasattr(config, "max_source_positions"):  # Whisper
            x = {"input_features": torch.randn(1, config.num_mel_bins, 2 * config.max_source_positions, generator=g)}
        elif hasattr(config, "input_feat_per_channel"):  # Speech2Text
            feats = config.input_feat_per_channel * getattr(config, "input_channels", 1)
            x = {"input_features": torch.randn(1, 64, feats, generator=g)}
        else:
            feats = getattr(config, "num_mel_bins", None) or getattr(config, "feature_size", 80)
            x = {"input_features": torch.randn(1, 64, feats, generator=g)}
    else:
        raise OutOfScope(f"main input {main!r} is not text, image or audio")
    if getattr(config, "is_encoder_decoder", False):
        x["decoder_input_ids"] = torch.randint(3, vocab, (1, 4), generator=g)
    return x


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {' '.join(text[0].split())[:240] if text else ''}"


def _where(exc: BaseException) -> str:
    """The innermost frame of the traceback inside shrink/ or transformers/, for grouping causes."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if "/shrink/" in f.filename
              or "/transformers/" in f.filename]
    if not frames:
        return ""
    f = frames[-1]
    path = re.sub(r".*/(shrink|transformers)/", r"\1/", f.filename)
    return f"{path}:{f.lineno} ({f.name})"


def _max_diff(a, b) -> float:
    import torch

    diffs = [float((a[k].double() - b[k].double()).abs().max()) for k in a
             if k in b and a[k].shape == b[k].shape and a[k].is_floating_point() and a[k].numel()]
    if any(k not in b or a[k].shape != b[k].shape for k in a):
        return float("inf")
    return max(diffs, default=0.0) if all(torch.isfinite(torch.tensor(diffs))) else float("nan")


def _reasons(kept_whole: dict) -> dict[str, int]:
    out: dict[str, int] = {}
    for reason in kept_whole.values():
        text = reason.replace("uniform=True (one width per kind for all layers): ", "")
        key = re.sub(r"'[^']*'", "'…'", re.split(r": | \(", text)[0])[:90]
        out[key] = out.get(key, 0) + 1
    return out


def one(model_type: str, head: str, class_name: str) -> dict:
    """Build, compress, save/reload and export one type (runs in a child process)."""
    import torch
    import transformers

    import shrink
    from shrink._util import inputs as _inputs

    torch.set_num_threads(1)
    torch.manual_seed(0)
    warnings.simplefilter("ignore")
    transformers.logging.set_verbosity_error()
    row: dict = {"type": model_type, "head": head, "class": class_name}
    t0 = time.perf_counter()
    stage = "build"
    try:
        config = small(transformers.AutoConfig.for_model(model_type))
        if hasattr(config, "validate"):  # a size this sweep chose that the config's own checks refuse
            config.validate()  # (save_pretrained would refuse it later, for no fault of the cut)
        model = getattr(transformers, class_name)(config).eval()
        stage = "inputs"
        x = example_inputs(model, config)
        stage = "dense forward"
        with torch.no_grad():
            dense = _inputs.flatten_outputs(model(**x))
    except OutOfScope as exc:
        row.update(status="not text/image/audio", stage=stage, error=str(exc))
        return row
    except Exception as exc:  # noqa: BLE001 - the table records what cannot be built
        row.update(status="not built", stage=stage, error=_short(exc), where=_where(exc))
        return row
    row["inputs"] = {k: list(v.shape) for k, v in x.items()}
    row["build_s"] = round(time.perf_counter() - t0, 2)
    t0 = time.perf_counter()
    try:
        result = shrink.compress(model, x, ratio=0.5)
    except Exception as exc:  # noqa: BLE001
        row.update(status="compress fails", compress_s=round(time.perf_counter() - t0, 2), error=_short(exc),
                   where=_where(exc))
        return row
    row.update(status="compressed", compress_s=round(time.perf_counter() - t0, 2),
               params_before=result.before.params, params_after=result.after.params,
               params_removed=round(1 - result.after.params / result.before.params, 4),
               kept_whole=len(result.kept_whole), kept_reasons=_reasons(result.kept_whole),
               kept_examples=dict(list(result.kept_whole.items())[:6]))
    with torch.no_grad(), _inputs.same_draws():  # one random state per run (ViT-MAE masks at random)
        mine = _inputs.flatten_outputs(result.model(**x))
    row["output_shapes_kept"] = all(k in mine and mine[k].shape == v.shape for k, v in dense.items())
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        try:
            folder = shrink.save_pretrained(result, Path(tmp) / "hf")
            loaded = type(result.model).from_pretrained(folder).eval()
            with torch.no_grad(), _inputs.same_draws():
                row["reload_max_abs_diff"] = _max_diff(mine, _inputs.flatten_outputs(loaded(**x)))
            del loaded
        except Exception as exc:  # noqa: BLE001
            row.update(save_error=_short(exc), save_where=_where(exc))
        row["save_s"] = round(time.perf_counter() - t0, 2)
        t0 = time.perf_counter()
        try:
            rep = shrink.export_onnx(result.model, x, Path(tmp) / "m.onnx")
            row.update(onnx_exporter=rep.exporter, onnx_batches=list(rep.batch_sizes),
                       onnx_max_rel_diff=rep.max_rel_diff, onnx_notes=list(rep.notes))
        except Exception as exc:  # noqa: BLE001
            row.update(onnx_error=_short(exc), onnx_where=_where(exc))
        row["onnx_s"] = round(time.perf_counter() - t0, 2)
    return row


def _child(conn, args) -> None:
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)  # library prints, progress bars and log lines stay out of the sweep's log
    os.dup2(null, 2)
    try:
        conn.send(one(*args))
    except BaseException as exc:  # noqa: BLE001
        conn.send({"type": args[0], "head": args[1], "class": args[2], "status": "crashed", "error": _short(exc)})


def run_one(model_type: str, head: str, class_name: str, timeout: float) -> dict:
    """`one` in a forked child (the parent has imported transformers, not run anything), killed after ``timeout`` s."""
    ctx = multiprocessing.get_context("fork")
    parent, child = ctx.Pipe(duplex=False)
    start = time.perf_counter()
    proc = ctx.Process(target=_child, args=(child, (model_type, head, class_name)))
    proc.start()
    child.close()
    row = None
    if parent.poll(timeout):
        try:
            row = parent.recv()
        except EOFError:
            pass
    if proc.is_alive():
        proc.kill()
    proc.join()
    if row is None:
        timed_out = time.perf_counter() - start >= timeout
        row = {"type": model_type, "head": head, "class": class_name, "status": "timeout" if timed_out else "crashed",
               "error": f"no answer within {timeout:g} s" if timed_out else f"child exited with {proc.exitcode}"}
    row["wall_s"] = round(time.perf_counter() - start, 1)
    return row


def counts(rows: list[dict]) -> dict[str, int]:
    built = [r for r in rows if "build_s" in r]
    done = [r for r in rows if r["status"] == "compressed"]
    return {
        "types swept": len(rows),
        "main input not text, image or audio": sum(r["status"] == "not text/image/audio" for r in rows),
        "built and run dense": len(built),
        "compress returns a model": len(done),
        "compress (> 20% of parameters removed)": sum(r["params_removed"] > 0.2 for r in done),
        "at least 1/3 removed": sum(r["params_removed"] >= 1 / 3 for r in done),
        "output shapes kept": sum(bool(r.get("output_shapes_kept")) for r in done),
        "saved and reloaded identical (max abs diff <= 1e-6)": sum(r.get("reload_max_abs_diff", 1) <= 1e-6 for r in done),
        "ONNX parity at batches 1 and 3": sum({1, 3} <= set(r.get("onnx_batches", ())) for r in done),
    }


def _cell(text) -> str:
    return str(text).replace("|", "/").replace("\n", " ")


def write(rows: list[dict], skipped: dict[str, str], info: dict, out: Path) -> None:
    from _machine import header

    rows = sorted(rows, key=lambda r: r["type"])
    c = counts(rows)
    out.with_suffix(".json").write_text(json.dumps({"machine": info, "counts": c, "rows": rows,
                                                    "not_swept": skipped}, indent=1))
    lines = ["# Every model type transformers builds here: compress(ratio=0.5) at default settings", "",
             header(info), "", "| count | types |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in c.items()]
    lines += ["", f"Sizes: width {WIDTH}, {HEADS_N} heads, FFN {FFN}, {LAYERS} layers, vocab {VOCAB}, images "
              f"{IMAGE}x{IMAGE}, audio {AUDIO_SAMPLES} samples, {SEQ} tokens; per-type limit {info['timeout_s']:g} s "
              "(build + compress + save/reload + ONNX).", "",
              "| type | head | status | params before → after (removed) | groups kept whole (why) | reload max abs diff "
              "| ONNX (batches, max rel diff) | s | error |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["status"] != "compressed":
            lines.append(f"| {r['type']} | {r['head']} | {r['status']} | | | | | {r.get('wall_s', '')} | "
                         f"{_cell(r.get('stage', '') + ': ' if r.get('stage') else '')}{_cell(r.get('error', ''))} |")
            continue
        why = "; ".join(f"{k} ×{n}" for k, n in sorted(r["kept_reasons"].items(), key=lambda kv: -kv[1]))
        onnx = (f"{', '.join(map(str, r['onnx_batches']))}: {r['onnx_max_rel_diff']:.1e}" if "onnx_batches" in r
                else "fails")
        reload = f"{r['reload_max_abs_diff']:.1e}" if "reload_max_abs_diff" in r else "fails"
        errors = [f"{k.split('_')[0]}: {r[k]}" for k in ("save_error", "onnx_error") if k in r]
        lines.append(f"| {r['type']} | {r['head']} | ok{'' if r['output_shapes_kept'] else ', shapes changed'} | "
                     f"{r['params_before']:,} → {r['params_after']:,} ({r['params_removed']:.0%}) | "
                     f"{r['kept_whole']}: {_cell(why)} | {reload} | {onnx} | {r['wall_s']} | {_cell('; '.join(errors))} |")
    if skipped:
        lines += ["", f"## Not swept ({len(skipped)})", ""]
        by_reason: dict[str, list[str]] = {}
        for t, why in sorted(skipped.items()):
            by_reason.setdefault(why, []).append(t)
        lines += [f"- {why} ({len(ts)}): {', '.join(ts)}" for why, ts in by_reason.items()]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")


def table_only(partial: Path, chosen: dict, skipped: dict[str, str], args) -> None:
    """The table of the rows in ``partial`` (complete lines only), the chosen types without a row as not reached."""
    import subprocess

    from _machine import machine

    rows = []
    for line in partial.read_text().splitlines() if partial.exists() else ():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # a line being appended right now
            continue
    rows = list({r["type"]: r for r in rows}.values())
    done = {r["type"] for r in rows}
    missing = sorted(t for t in chosen if t not in done)
    total = len(chosen) + len(skipped)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE, capture_output=True,
                            text=True).stdout.strip()
    info = {**machine(), "torch_threads": "1 in each type's child", "timeout_s": args.timeout,
            "types_side_by_side": args.jobs,
            "swept": f"{len(rows)} of {len(chosen)} types ({total} in the mappings, {len(skipped)} not swept), "
                     "alphabetical" + (f", {len(missing)} not reached" if missing else ""),
            "table written": f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} from the rows so far",
            "code": f"shrink at {commit}" if commit else "unknown"}
    if missing:
        skipped = {**skipped, **{t: "not reached: the sweep had not come to it"
                                 for t in missing}}
    write(rows, skipped, info, args.out)
    print(json.dumps(counts(rows), indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--types", nargs="*", help="model types (config model_type), default: all")
    parser.add_argument("--limit", type=int, help="the first N types only")
    parser.add_argument("--timeout", type=float, default=180, help="seconds per type")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "hf_types", help="path stem of .md/.json")
    parser.add_argument("--resume", action="store_true", help="keep the rows of OUT.partial.jsonl, run the rest")
    parser.add_argument("--update", action="store_true",
                        help="with --types: replace those rows in OUT.json, keep the others (marked in the header)")
    parser.add_argument("--jobs", type=int, default=1, help="types run side by side (one thread each)")
    parser.add_argument("--table-only", action="store_true",
                        help="run nothing: write OUT.md/.json from the rows of OUT.partial.jsonl so far (a sweep "
                             "may still be appending); types without a row are listed as not reached")
    args = parser.parse_args()
    import torch
    import transformers

    from _machine import machine

    torch.set_num_threads(1)
    transformers.logging.set_verbosity_error()
    chosen, skipped = pick_heads(args.types)
    if args.limit:
        chosen = dict(list(chosen.items())[:args.limit])
    partial = args.out.with_suffix(".partial.jsonl")
    if args.table_only:
        table_only(partial, chosen, skipped, args)
        return
    rows = [json.loads(line) for line in partial.read_text().splitlines()] if args.resume and partial.exists() else []
    import subprocess

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE, capture_output=True,
                            text=True).stdout.strip()
    info = {**machine(), "torch_threads": "1 in each type's child", "timeout_s": args.timeout,
            "types_side_by_side": args.jobs, "code": f"shrink and benchmark at {commit or 'unknown'}"}
    sweep_start = time.perf_counter()
    if args.update:
        if not args.types:
            parser.error("--update needs --types")
        previous = json.loads(args.out.with_suffix(".json").read_text())
        rows = [r for r in previous["rows"] if r["type"] not in chosen]
        skipped = {t: why for t, why in {**previous["not_swept"], **skipped}.items() if t not in chosen}
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=HERE).stdout.strip() or "unknown"
        update = f"{len(chosen)} types re-run later on {commit}: {', '.join(sorted(chosen))}"
        earlier = previous["machine"].get("updated")  # every update stays listed, the latest last
        info = {**previous["machine"], "updated": f"{earlier}; then {update}" if earlier else update}
    done = {r["type"] for r in rows}
    if not args.resume:
        partial.write_text("")
    load_before = os.getloadavg()
    todo = [(t, head, cls) for t, (head, cls) in chosen.items() if t not in done]
    with ThreadPoolExecutor(max_workers=max(args.jobs, 1)) as pool:
        for i, row in enumerate(pool.map(lambda item: run_one(*item, args.timeout), todo)):
            rows.append(row)
            with partial.open("a") as f:
                f.write(json.dumps(row) + "\n")
            err = row.get("error") or row.get("save_error") or row.get("onnx_error") or ""
            print(f"[{i + 1}/{len(todo)}] {row['type']:28s} {row['status']:15s} {row.get('params_removed', '')!s:7s} "
                  f"{row['wall_s']:6.1f}s {err[:100]}", flush=True)
    info["load_average_before" if not args.update else "load_average_before_update"] = "/".join(f"{v:.2f}" for v in load_before)
    info["load_average_after" if not args.update else "load_average_after_update"] = "/".join(f"{v:.2f}" for v in os.getloadavg())
    info["sweep_wall_s" if not args.update else "update_wall_s"] = round(time.perf_counter() - sweep_start)
    write(rows, skipped, info, args.out)
    print(json.dumps(counts(rows), indent=1))


if __name__ == "__main__":
    main()

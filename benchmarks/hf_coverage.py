"""Hugging Face families at default settings: compress, round trip, ONNX parity, ORT speed-up.

Every model is built from a tiny config (no download), with the defaults a user gets (sdpa
attention, use_cache=True) and one row of inputs. Per family: compress time at ratio 0.5,
parameters before/after, the largest difference between the in-memory compressed model and the
one `AutoModel*.from_pretrained` loads from `shrink.save_pretrained`'s folder, and ONNX parity
(batch 1 example, checked at batch 1 and 3). Then ONNX Runtime CPU latency of one encoder (BERT)
and one decoder (LLaMA with grouped-query attention), dense vs compressed, at batch 1 and 8.
Writes benchmarks/results/hf_coverage.{md,json}.

    python benchmarks/hf_coverage.py
    python benchmarks/hf_coverage.py --families gpt2 llama --no-speed
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import shrink  # noqa: E402
import transformers  # noqa: E402
from _machine import header, machine  # noqa: E402
from hf_models import FAMILIES  # noqa: E402

T = transformers
EXTRA: dict = {}  # families to measure beyond the tested ones


NOTES = """
What is cut at ratio 0.5 with uniform widths: heads, FFN and hidden width where the config can
state them. The base models (BERT, RoBERTa, DistilBERT) and the encoder-decoders (T5, BART,
Whisper) return their hidden states, so the hidden width stays whole; where the family derives the
head size from the hidden size (BERT, RoBERTa, DistilBERT, BART, Whisper) the heads stay with it,
and only the FFN is cut.
- T5: heads cut with their columns of the relative position bias table; every self-attention
  layer of a stack keeps the same heads (the first layer's bias is added in all of them).
- Mixtral: every expert's FFN loses the same count of units (each expert its own lowest-scored;
  config intermediate_size), checked exactly against zeroed down-projection columns; the router
  and the hidden width it reads stay whole; heads are cut. ONNX: exported with
  experts_implementation="batched_mm" (transformers' default grouped_mm has no ONNX translation),
  set back to the model's own afterwards.
- Swin: every stage's FFN loses one fraction, stated by mlp_ratio; heads stay whole at uniform
  widths, since the config derives each stage's head size from its width (width / num_heads);
  with uniform=False they are cut with their bias-table columns (save with shrink.save). Stage
  widths stay whole (one embed_dim for several widths).
- BLOOM: nothing is cut. Heads: ALiBi slopes are recomputed from the head count, so a kept head
  would get another slope (only every other head of a power-of-two count keeps its slope), and
  the config derives head size = hidden / n_head, so fewer heads need the hidden width cut with
  them. FFN: always 4 x hidden (no config field). Hidden width: it sets head size and FFN width,
  so it could only shrink together with both (not done).
"""


def _main_output(out):
    for key in ("logits", "last_hidden_state"):
        if getattr(out, key, None) is not None:
            return out[key]
    return out[0]


def _short(exc: Exception) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split())[:160]}"


def coverage(name, factory, inputs) -> dict:
    row = {"family": name}
    torch.manual_seed(0)
    model, x = factory().eval(), inputs()
    row["model_type"] = model.config.model_type
    t0 = time.perf_counter()
    try:
        result = shrink.compress(model, x, ratio=0.5)
    except Exception as exc:  # noqa: BLE001 - the table records what fails
        row.update(compress_s=time.perf_counter() - t0, error=f"compress: {_short(exc)}")
        return row
    row.update(compress_s=time.perf_counter() - t0, params_before=result.before.params,
               params_after=result.after.params)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            folder = shrink.save_pretrained(result, Path(tmp) / "hf")
            cls = getattr(T, model.config.architectures[0]) if model.config.architectures else type(model)
            loaded = cls.from_pretrained(folder).eval()
            with torch.no_grad():
                a, b = _main_output(result.model(**x)), _main_output(loaded(**x))
            row["roundtrip_max_abs_diff"] = float((a - b).abs().max())
            row["output_shape_kept"] = tuple(a.shape) == tuple(_main_output(model(**x)).shape)
        except Exception as exc:  # noqa: BLE001
            row["roundtrip_error"] = _short(exc)
        try:
            rep = shrink.export_onnx(result.model, x, Path(tmp) / "m.onnx")
            row.update(onnx_exporter=rep.exporter, onnx_max_rel_diff=rep.max_rel_diff,
                       onnx_batches=list(rep.batch_sizes))
        except Exception as exc:  # noqa: BLE001
            row["onnx_error"] = _short(exc)
    return row


def speed(name, model, x, batch_sizes, iters) -> list[dict]:
    result = shrink.compress(model, x, ratio=0.5)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        paths = {}
        for label, m in (("dense", model), ("shrunk", result.model)):
            paths[label] = str(shrink.export_onnx(m, x, Path(tmp) / f"{label}.onnx").path)
        rep = shrink.benchmark(paths, x, runtimes=("onnxruntime",), devices=("cpu",), batch_sizes=batch_sizes,
                               warmup=5, iters=iters, progress=False)
        p50 = {(r.model, r.batch): r.p50_ms for r in rep.rows if not r.skipped}
        for b in batch_sizes:
            rows.append({"model": name, "batch": b, "dense_p50_ms": p50[("dense", b)],
                         "shrunk_p50_ms": p50[("shrunk", b)], "speedup": p50[("dense", b)] / p50[("shrunk", b)],
                         "params_ratio": result.params_ratio, "macs_ratio": result.macs_ratio,
                         "threads": rep.rows[0].threads})
    return rows


def _speed_models():
    g = torch.Generator().manual_seed(0)
    ids = {"input_ids": torch.randint(0, 30522, (1, 128), generator=g)}
    bert = T.BertModel(T.BertConfig(hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
                                    intermediate_size=1024, max_position_embeddings=128)).eval()
    llama = T.LlamaForCausalLM(T.LlamaConfig(vocab_size=8000, hidden_size=256, intermediate_size=688,
                                             num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=2,
                                             max_position_embeddings=256)).eval()
    ids_l = {"input_ids": torch.randint(0, 8000, (1, 128), generator=g)}
    return {"bert (encoder, seq 128)": (bert, ids), "llama GQA (decoder, seq 128)": (llama, ids_l)}


def _fmt(v, spec):
    return format(v, spec) if isinstance(v, (int, float)) else "–"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", nargs="*")
    parser.add_argument("--no-speed", action="store_true")
    parser.add_argument("--iters", type=int, default=30)
    args = parser.parse_args()
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    families = {**FAMILIES, **EXTRA}
    names = args.families or list(families)
    load_before = os.getloadavg()
    rows = [coverage(n, *families[n]) for n in names]
    speed_rows = []
    if not args.no_speed:
        for label, (model, x) in _speed_models().items():
            speed_rows += speed(label, model, x, (1, 8), args.iters)
    load_after = os.getloadavg()
    info = machine()
    lines = ["# Hugging Face coverage at default settings", "", header(info), "",
             f"load average (1/5/15 min) before: {load_before[0]:.2f}/{load_before[1]:.2f}/{load_before[2]:.2f}, "
             f"after: {load_after[0]:.2f}/{load_after[1]:.2f}/{load_after[2]:.2f} (shared machine: timings are noisy)",
             "", "ratio 0.5, uniform widths (the default for HF models), sdpa attention, use_cache=True, "
             "one row of inputs.", "",
             "| family | model_type | compress s | params before | params after | round-trip max abs diff "
             "| ONNX max rel diff (batches) | note |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        onnx_cell = (f"{r['onnx_max_rel_diff']:.1e} ({', '.join(map(str, r['onnx_batches']))})"
                     if "onnx_max_rel_diff" in r else "fails")
        note = r.get("error") or r.get("roundtrip_error") or r.get("onnx_error") or ""
        lines.append(f"| {r['family']} | {r.get('model_type', '')} | {_fmt(r.get('compress_s'), '.2f')} | "
                     f"{_fmt(r.get('params_before'), ',')} | {_fmt(r.get('params_after'), ',')} | "
                     f"{_fmt(r.get('roundtrip_max_abs_diff'), '.1e')} | {onnx_cell} | {note} |")
    if speed_rows:
        lines += ["", "## ONNX Runtime CPU latency, dense vs compressed (ratio 0.5)", "",
                  "| model | batch | threads | dense p50 ms | shrunk p50 ms | speed-up | params ÷ | MACs ÷ |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in speed_rows:
            lines.append(f"| {r['model']} | {r['batch']} | {r['threads']} | {r['dense_p50_ms']:.2f} | "
                         f"{r['shrunk_p50_ms']:.2f} | {r['speedup']:.2f} | {r['params_ratio']:.2f} | "
                         f"{r['macs_ratio']:.2f} |")
    lines += ["", "## Notes", NOTES.rstrip()]
    out = HERE / "results" / "hf_coverage"
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    out.with_suffix(".json").write_text(json.dumps({"machine": info, "load_before": load_before,
                                                    "load_after": load_after, "families": rows,
                                                    "speed": speed_rows}, indent=1))
    print("\n".join(lines))


if __name__ == "__main__":
    main()

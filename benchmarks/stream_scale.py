"""Streamed compress (`shrink.compress_folder`) of LLaMA-shaped bf16 folders, up to larger than this machine's RAM.

For each shape a random-weight folder is written the way checkpoints ship (bf16 safetensors
shards of about 2 GB with an index; never the whole model in memory), then compressed with
``ratio=0.5`` in a fresh process: ``stream`` is ``shrink.compress_folder`` (layer by layer from the
shards), ``memory`` is ``from_pretrained`` + ``shrink.compress(inplace=True)`` + ``save_pretrained``
where the model fits, and ``torch-pruning`` the same with torch-pruning's own LLM recipe instead of
shrink (no checks; config fields set by hand). Peak RSS is the process's ``VmHWM`` (the interpreter included); disk read
and written are the process's ``read_bytes``/``write_bytes`` from ``/proc/self/io`` (what reached the
storage layer; reads the page cache served are not in it), beside the bytes shrink asked for. A
plain ``cp -r`` of the same folder is timed for the disk's speed. Writes
benchmarks/results/stream_scale.{md,json}.

    python benchmarks/stream_scale.py                           # 1b (both), 8b (stream), 13b (stream)
    python benchmarks/stream_scale.py --shapes 1b --modes stream memory
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
from scale import SHAPES as _IN_MEMORY_SHAPES  # noqa: E402

# Llama-2-13B's published widths: 26 GB in bf16, more than this machine's 23 GiB of RAM.
SHAPES = {**_IN_MEMORY_SHAPES,
          "13b": {"hidden_size": 5120, "intermediate_size": 13824, "num_hidden_layers": 40,
                  "num_attention_heads": 40, "num_key_value_heads": 40, "vocab_size": 32000}}
SHARD = 2 * 10**9


def write_folder(shape: str, folder: Path) -> int:
    """A random-weight bf16 folder of ``shape`` in shards, a tensor at a time; its weight bytes."""
    import torch
    import transformers
    from safetensors.torch import save_file

    config = transformers.LlamaConfig(**SHAPES[shape], architectures=["LlamaForCausalLM"])
    config.dtype = "bfloat16"
    with torch.device("meta"):
        model = transformers.LlamaForCausalLM(config)
    tied = bool(config.tie_word_embeddings)
    names = [(k, tuple(v.shape)) for k, v in model.state_dict().items() if not (tied and k == "lm_head.weight")]
    folder.mkdir(parents=True)
    gen = torch.Generator().manual_seed(0)
    shards, held, size, total = [], {}, 0, 0
    for i, (name, shape_) in enumerate(names):
        t = torch.empty(shape_, dtype=torch.bfloat16)
        if name.endswith("norm.weight"):
            t.fill_(1.0)
        else:
            t.uniform_(-0.04, 0.04, generator=gen)
        held[name], size = t, size + t.numel() * 2
        if size >= SHARD or i == len(names) - 1:
            file = f"part-{len(shards):05d}.safetensors"
            save_file(held, str(folder / file), metadata={"format": "pt"})
            shards.append((file, list(held)))
            total += size
            held, size = {}, 0
    weight_map = {}
    for i, (file, keys) in enumerate(shards):
        final = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        (folder / file).rename(folder / final)
        weight_map.update({k: final for k in keys})
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}))
    config.save_pretrained(str(folder))
    return total


def _io() -> dict:
    out = {}
    for line in open("/proc/self/io"):
        k, v = line.split(":")
        out[k] = int(v)
    return out


def _peak() -> int:
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("VmHWM")


def child(mode: str, src: Path, out: Path) -> dict:
    import torch

    torch.set_num_threads(2)
    import shrink

    io0, t0 = _io(), time.perf_counter()
    if mode == "stream":
        report = shrink.compress_folder(src, out, ratio=0.5, max_shard_bytes=SHARD // 4)
        before, after, asked = report.params_before, report.params_after, report.bytes_read
    elif mode == "torch-pruning":
        before, after = _torch_pruning(src, out)
        asked = None
    else:
        import transformers

        model = transformers.AutoModelForCausalLM.from_pretrained(str(src), dtype=torch.bfloat16)
        ids = torch.randint(0, model.config.vocab_size, (1, 16), generator=torch.Generator().manual_seed(0))
        result = shrink.compress(model, {"input_ids": ids}, ratio=0.5, inplace=True)
        shrink.save_pretrained(result, out)
        before, after, asked = result.before.params, result.after.params, None
    seconds = time.perf_counter() - t0
    io1 = _io()
    return {"seconds": seconds, "peak": _peak(), "params_before": before, "params_after": after,
            "read_disk": io1["read_bytes"] - io0["read_bytes"], "written_disk": io1["write_bytes"] - io0["write_bytes"],
            "read_asked": asked, "out_bytes": sum(f.stat().st_size for f in out.glob("*.safetensors"))}


def _torch_pruning(src: Path, out: Path) -> tuple[int, int]:
    """torch-pruning's own recipe for a Hugging Face LLaMA (its examples/LLMs/prune_llm.py, at L1 and
    ratio 0.5, heads by GQA group): in memory, then ``save_pretrained`` with the config fields set by hand."""
    import torch
    import torch_pruning as tp
    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(str(src), dtype=torch.bfloat16).eval()
    model.config.use_cache = False
    config = model.config
    before = sum(p.numel() for p in model.parameters())
    ids = torch.randint(0, config.vocab_size, (1, 16), generator=torch.Generator().manual_seed(0))
    num_heads = {}
    for m in model.modules():
        if hasattr(m, "q_proj") and hasattr(m, "k_proj"):
            num_heads[m.q_proj] = config.num_attention_heads
            num_heads[m.k_proj] = num_heads[m.v_proj] = config.num_key_value_heads
    head_dim = config.hidden_size // config.num_attention_heads
    pruner = tp.pruner.BasePruner(
        model, example_inputs={"input_ids": ids},
        importance=tp.importance.GroupMagnitudeImportance(p=1, group_reduction="sum", normalizer=None),
        pruning_ratio=0.5, ignored_layers=[model.lm_head], num_heads=num_heads, prune_num_heads=True,
        prune_head_dims=False, head_pruning_ratio=0.5,
        out_channel_groups={m.k_proj: head_dim for m in model.modules() if hasattr(m, "k_proj")},
        root_module_types=[torch.nn.Linear], output_transform=lambda out: out.logits)
    pruner.step()
    attn = [m for m in model.modules() if hasattr(m, "q_proj")]
    config.hidden_size = model.model.embed_tokens.weight.shape[1]
    config.intermediate_size = model.model.layers[0].mlp.gate_proj.out_features
    config.num_attention_heads = attn[0].q_proj.out_features // head_dim
    config.num_key_value_heads = attn[0].k_proj.out_features // head_dim
    config.head_dim = head_dim
    model.save_pretrained(str(out))
    return before, sum(p.numel() for p in model.parameters())


def _cp_seconds(src: Path, dst: Path) -> float:
    t0 = time.perf_counter()
    subprocess.run(["cp", "-r", str(src), str(dst)], check=True)
    subprocess.run(["sync"], check=True)
    seconds = time.perf_counter() - t0
    shutil.rmtree(dst)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", default=["1b", "8b", "13b"], choices=sorted(SHAPES))
    parser.add_argument("--modes", nargs="+", default=None, choices=["stream", "memory", "torch-pruning"],
                        help="default: stream everywhere, memory too where the folder is under half of RAM")
    parser.add_argument("--work", type=Path, default=Path("/tmp/shrink-stream-scale"))
    parser.add_argument("--keep", action="store_true", help="keep the written folders")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "stream_scale")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], Path(args.child[1]), Path(args.child[2]))))
        return
    from _machine import machine

    ram = _ram()
    rows = []
    for shape in args.shapes:
        src = args.work / shape
        shutil.rmtree(args.work, ignore_errors=True)
        t0 = time.perf_counter()
        model_bytes = write_folder(shape, src)
        write_s = time.perf_counter() - t0
        cp_s = _cp_seconds(src, args.work / f"{shape}-cp")
        modes = args.modes or (["stream", "memory", "torch-pruning"] if model_bytes < ram / 2 else ["stream"])
        for mode in modes:
            out = args.work / f"{shape}-{mode}"
            done = subprocess.run([sys.executable, __file__, "--child", mode, str(src), str(out)],
                                  capture_output=True, text=True)
            row = {"shape": shape, "mode": mode, "layers": SHAPES[shape]["num_hidden_layers"],
                   "model_bytes": model_bytes, "write_seconds": write_s, "cp_seconds": cp_s}
            if done.returncode != 0:
                tail = (done.stderr.strip().splitlines() or ["killed (out of memory?)"])[-1]
                row["error"] = f"exit {done.returncode}: {tail}"
            else:
                row.update(json.loads(done.stdout.strip().splitlines()[-1]))
            rows.append(row)
            print(row, flush=True)
            shutil.rmtree(out, ignore_errors=True)
        if not args.keep:
            shutil.rmtree(args.work, ignore_errors=True)
    info = machine()
    info["torch_threads"] = 2
    info["ram_gib"] = round(ram / 2**30, 1)
    _write(args.out, rows, info)


def _ram() -> int:
    for line in open("/proc/meminfo"):
        if line.startswith("MemTotal"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("MemTotal")


def _write(out: Path, rows: list[dict], info: dict) -> None:
    from _machine import header

    lines = ["# streamed compress of LLaMA-shaped bf16 folders", "", header(info), "",
             "Shapes: " + "; ".join(f"{k}: " + ", ".join(f"{a} {b}" for a, b in SHAPES[k].items())
                                    for k in dict.fromkeys(r["shape"] for r in rows)) + ". Random bf16 weights "
             "in ~2 GB shards; `ratio=0.5`; one fresh process per row. peak = VmHWM (interpreter included). "
             "disk read/written = /proc/self/io read_bytes/write_bytes; asked = bytes shrink read from the shards "
             "(each layer is read twice: once to rank the widths every layer shares, once to cut it; the twin's "
             "layer 0 and embeddings once per layer, mostly from the page cache). cp = `cp -r` of the folder + sync.",
             "",
             "| shape | layers | model GB | mode | peak GiB | peak × model | seconds | MB/s of model | cp MB/s | "
             "asked GB | disk read GB | disk written GB | params before → after |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        gb = r["model_bytes"] / 1e9
        cp = r["model_bytes"] / 1e6 / r["cp_seconds"]
        if "error" in r:
            lines.append(f"| {r['shape']} | {r['layers']} | {gb:.1f} | {r['mode']} | {r['error']} | | | | {cp:.0f} | | | | |")
            continue
        asked = f"{r['read_asked'] / 1e9:.1f}" if r.get("read_asked") is not None else "–"
        lines.append(
            f"| {r['shape']} | {r['layers']} | {gb:.1f} | {r['mode']} | {r['peak'] / 2**30:.2f} | "
            f"{r['peak'] / r['model_bytes']:.2f} | {r['seconds']:.0f} | {r['model_bytes'] / 1e6 / r['seconds']:.0f} | "
            f"{cp:.0f} | {asked} | {r['read_disk'] / 1e9:.1f} | {r['written_disk'] / 1e9:.1f} | "
            f"{r['params_before'] / 1e9:.2f} B → {r['params_after'] / 1e9:.2f} B |")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    out.with_suffix(".json").write_text(json.dumps({"machine": info, "rows": rows}, indent=1))
    print("\n".join(lines))


if __name__ == "__main__":
    main()

"""Issue 20: a small GPT trained on the Python standard library's own source, cut to about half its
parameters, then distilled back from the dense model; once more with the distillation run by 2
processes under torchrun (gloo), to see that it converges like 1 process.

Text every machine has: 39 modules of the standard library (`sysconfig.get_paths()["stdlib"]`),
a fixed list; 5 of them are held out. Bytes are the tokens (vocabulary 256). The model is a
4-layer, 128-wide, 4-head pre-norm GPT with a 128-byte context, written below.

    python examples/gpt_stdlib.py                       # l1 ranking, 2-process run: about 5 CPU minutes
    python examples/gpt_stdlib.py --importance l1 l2    # one row set per ranking (names compress knows)
    python examples/gpt_stdlib.py --nproc 1 --quick     # a smoke run of a few seconds, written to a temp folder

Writes examples/results/gpt_stdlib.{md,json}. Perplexity is measured by `_perplexity` below
(exp of the mean next-byte cross-entropy on the held-out files), a stand-in for
`shrink.evaluate(..., metric="perplexity")`.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import shrink

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, header, machine  # noqa: E402

TRAIN = ("argparse ast calendar codecs configparser contextlib copy csv dataclasses datetime difflib enum "
         "functools gettext glob heapq inspect ipaddress locale operator optparse pickle pprint random shutil "
         "statistics string subprocess tarfile threading tokenize typing warnings weakref").split()
HELD_OUT = ("fractions", "gzip", "queue", "textwrap", "uuid")
CONTEXT, WIDTH, DEPTH, HEADS = 128, 128, 4, 4
BATCH = 16  # windows of CONTEXT bytes per optimiser step (the global batch)
BUDGETS = {"params=0.5": {"params": 0.5}, "ratio=0.3": {"ratio": 0.3}}  # shrink's allocation; uniform widths
SCHEDULE = {"full": dict(dense_epochs=20, distil_epochs=8, steps=20, eval_windows=256),
            "quick": dict(dense_epochs=2, distil_epochs=2, steps=3, eval_windows=8)}


# --- the model -----------------------------------------------------------------------------------

class CausalAttention(nn.Module):
    """Multi-head self-attention over the past: one fused projection laid out [q | k | v].

    The head size is read from the projection (``-1`` in the reshape), so whole heads can be removed.
    """

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.num_heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x):
        b, t, _ = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        mixed = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(mixed.transpose(1, 2).reshape(b, t, -1))


class Block(nn.Module):
    """Pre-norm residual block: attention, then a 4x-wide GELU MLP."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.ln1, self.attn = nn.LayerNorm(width), CausalAttention(width, heads)
        self.ln2, self.up, self.down = nn.LayerNorm(width), nn.Linear(width, 4 * width), nn.Linear(4 * width, width)

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.down(F.gelu(self.up(self.ln2(x))))


class GPT(nn.Module):
    """Bytes in, next-byte logits out: learned token and position embeddings, blocks, a final norm."""

    def __init__(self, vocab: int = 256, context: int = CONTEXT, width: int = WIDTH, depth: int = DEPTH,
                 heads: int = HEADS):
        super().__init__()
        self.tok, self.pos = nn.Embedding(vocab, width), nn.Embedding(context, width)
        self.blocks = nn.Sequential(*[Block(width, heads) for _ in range(depth)])
        self.ln = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab, bias=False)

    def forward(self, ids):
        x = self.tok(ids) + self.pos(torch.arange(ids.shape[1], device=ids.device))
        return self.head(self.ln(self.blocks(x)))


# --- the data ------------------------------------------------------------------------------------

def text(names) -> tuple[torch.Tensor, list[str]]:
    """The bytes of the named standard-library modules, one after another (those this Python has)."""
    root = Path(sysconfig.get_paths()["stdlib"])
    found = [n for n in names if (root / f"{n}.py").is_file()]
    data = b"\n".join((root / f"{n}.py").read_bytes() for n in found)
    return torch.frombuffer(bytearray(data), dtype=torch.uint8).long(), found


class Windows:
    """``steps`` batches of ``batch`` random windows per pass, drawn from ``seed`` and the pass number.

    A pass's window starts are drawn at once, so 2 processes given batches of ``batch // 2`` and
    twice the steps (fit gives rank r every other batch) see, step for step, the windows of one
    process given ``batch``.
    """

    def __init__(self, tokens: torch.Tensor, *, batch: int, steps: int, seed: int):
        self.tokens, self.batch, self.steps, self.seed, self.passes = tokens, batch, steps, seed, 0

    def __len__(self) -> int:
        return self.steps

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 10_000 + self.passes)
        self.passes += 1
        starts = torch.randint(0, len(self.tokens) - CONTEXT, (self.steps * self.batch,), generator=g)
        for i in range(self.steps):
            chunk = starts[i * self.batch:(i + 1) * self.batch]
            yield torch.stack([self.tokens[s:s + CONTEXT] for s in chunk.tolist()])


@torch.no_grad()
def _perplexity(model: nn.Module, tokens: torch.Tensor, windows: int) -> float:
    """exp(mean next-byte cross-entropy) over the first ``windows`` non-overlapping windows of ``tokens``.

    A private stand-in until `shrink.evaluate(model, data, metric="perplexity")` lands (issue 20, item 1).
    """
    model.eval()
    n = min(windows, len(tokens) // CONTEXT)
    ids = tokens[:n * CONTEXT].view(n, CONTEXT)
    total = 0.0
    for chunk in ids.split(32):
        logits = model(chunk)[:, :-1]
        total += float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]), chunk[:, 1:].reshape(-1), reduction="sum"))
    return math.exp(total / (n * (CONTEXT - 1)))


# --- the runs ------------------------------------------------------------------------------------

def ranking(name: str, calibration: list[torch.Tensor]) -> dict:
    """compress's keywords for a ranking named on the command line."""
    if name == "l1":
        return {}
    if name == "l2":
        return {"norm": 2}
    return {"importance": name, "calibration": calibration}  # the data-aware rankings of issue 20, item 2


DISTIL = dict(task="lm", lr=1e-3, temperature=2.0, alpha=0.5, progress=False)


def distil(student, dense, train, sched, *, world: int = 1, **kwargs) -> list[dict]:
    loader = Windows(train, batch=BATCH // world, steps=sched["steps"] * world, seed=1)
    return shrink.fit(student, loader, teacher=dense, epochs=sched["distil_epochs"], **DISTIL, **kwargs)


def worker(folder: Path) -> None:
    """One rank of the 2-process distillation (started by `two_processes` through torchrun)."""
    torch.set_num_threads(1)
    job = json.loads((folder / "job.json").read_text())
    train, _ = text(TRAIN)
    dense = GPT()
    dense.load_state_dict(torch.load(folder / "dense.pt", weights_only=True))
    student = shrink.load(folder / "cut", GPT())
    world = int(os.environ["WORLD_SIZE"])
    start = time.perf_counter()
    history = distil(student, dense, train, job["schedule"], world=world, distributed=True)
    if int(os.environ["RANK"]) == 0:
        torch.save(student.state_dict(), folder / "student.pt")
        (folder / "history.json").write_text(json.dumps({"history": history, "seconds": time.perf_counter() - start}))


def two_processes(folder: Path, dense, sched, nproc: int) -> tuple[nn.Module, dict]:
    """Distil the cut saved in ``folder/cut`` from ``dense`` in ``nproc`` processes: the student, and what the job said."""
    torch.save(dense.state_dict(), folder / "dense.pt")
    (folder / "job.json").write_text(json.dumps({"schedule": sched}))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
                    str(Path(__file__).resolve()), "--worker", str(folder)], env=env, check=True)
    wall = time.perf_counter() - start
    student = shrink.load(folder / "cut", GPT())
    student.load_state_dict(torch.load(folder / "student.pt", weights_only=True))
    job = json.loads((folder / "history.json").read_text())
    return student, {**job, "wall_seconds_with_start": wall}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--importance", nargs="+", default=["l1"], help="rankings to compare (default: l1)")
    parser.add_argument("--nproc", type=int, default=2, help="processes for the torchrun distillation (1: skip it)")
    parser.add_argument("--quick", action="store_true", help="a few steps only, written to a temporary folder")
    parser.add_argument("--out", type=Path, default=None, help="folder for gpt_stdlib.{md,json}")
    parser.add_argument("--worker", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker is not None:
        return worker(args.worker)
    torch.set_num_threads(1)  # others share this machine; every figure below is one thread
    sched = SCHEDULE["quick" if args.quick else "full"]
    out = args.out or (Path(tempfile.mkdtemp()) if args.quick else RESULTS)
    began = time.perf_counter()
    train, train_files = text(TRAIN)
    val, val_files = text(HELD_OUT)
    example = train[:CONTEXT].unsqueeze(0)
    scratch = Path(tempfile.mkdtemp(prefix="gpt_stdlib-"))  # the first cut, saved for the n-process run

    # 1. The dense model, trained by shrink.fit itself (task="lm").
    torch.manual_seed(0)
    dense = GPT()
    start = time.perf_counter()
    dense_curve = shrink.fit(dense, Windows(train, batch=BATCH, steps=sched["steps"], seed=0), task="lm",
                             epochs=sched["dense_epochs"], lr=2e-3, progress=False)
    dense_seconds = time.perf_counter() - start
    dense.eval()
    rows = [{"model": "dense", "importance": "", "budget": "", "params": shrink.count(dense, example).params,
             "perplexity": _perplexity(dense, val, sched["eval_windows"]), "seconds": dense_seconds}]
    print(f"dense: perplexity {rows[0]['perplexity']:.3f} after {dense_seconds:.0f} s", flush=True)

    # 1b. The same extra steps without a cut: the dense model is not trained to convergence, so a
    # distilled student also gains from its extra training; this row is that gain alone.
    longer = copy.deepcopy(dense)
    longer_curve = shrink.fit(longer, Windows(train, batch=BATCH, steps=sched["steps"], seed=1), task="lm",
                              epochs=sched["distil_epochs"], lr=DISTIL["lr"], progress=False)
    rows.append({"model": "dense, trained on", "importance": "", "budget": "", "params": rows[0]["params"],
                 "perplexity": _perplexity(longer, val, sched["eval_windows"])})
    del longer

    # 2. Cut with each ranking and budget, then distil from the dense model.
    calibration = [train[i * CONTEXT:(i + 1) * CONTEXT].unsqueeze(0) for i in range(8)]
    students, first_cut, curves = {}, None, {}
    for name in args.importance:
        for budget, options in BUDGETS.items():
            label = f"{name}, {budget}"
            try:
                cut = shrink.compress(dense, example, **options, **ranking(name, calibration))
            except (TypeError, shrink.ShrinkError) as exc:  # a ranking this shrink does not have yet
                rows.append({"model": "cut", "importance": name, "budget": budget, "error": str(exc).splitlines()[0]})
                continue
            if first_cut is None:
                first_cut = label
                shrink.save(cut, scratch / "cut")  # before distillation changes its weights
            params = shrink.count(cut.model, example).params
            rows.append({"model": "cut", "importance": name, "budget": budget, "params": params,
                         "perplexity": _perplexity(cut.model, val, sched["eval_windows"])})
            start = time.perf_counter()
            curves[label] = distil(cut.model, dense, train, sched)
            rows.append({"model": "recovered", "importance": name, "budget": budget, "params": params,
                         "perplexity": _perplexity(cut.model, val, sched["eval_windows"]),
                         "seconds": time.perf_counter() - start})
            students[label] = cut.model
            print(f"{label}: {rows[-2]['perplexity']:.3f} cut, {rows[-1]['perplexity']:.3f} recovered", flush=True)

    # 3. Latency: the torch runtime, CPU, batch 1, one thread.
    bench = shrink.benchmark({"dense": dense, **students}, example, runtimes=("torch",), devices=("cpu",),
                             batch_sizes=(1,), threads=1, progress=False, **({"iters": 5, "warmup": 1} if args.quick else {}))
    timed = {row.model: row for row in bench.rows if not row.skipped}
    for row in rows:
        key = "dense" if row["model"].startswith("dense") else f"{row['importance']}, {row['budget']}"
        if key in timed:
            row.update(p50_ms=timed[key].p50_ms, p90_ms=timed[key].p90_ms, spread=timed[key].spread)

    # 4. The same distillation of the first cut in --nproc processes (gloo), from the same starting weights.
    scale_out = None
    if args.nproc > 1 and first_cut is not None:
        label = first_cut
        student, job = two_processes(scratch, dense, sched, args.nproc)
        one = curves[label]
        scale_out = {"cut": label, "nproc": args.nproc, "one_process": [r["loss"] for r in one],
                     "n_processes": [r["loss"] for r in job["history"]],
                     "max_abs_loss_difference": max(abs(a["loss"] - b["loss"]) for a, b in zip(one, job["history"])),
                     "perplexity_one_process": next(r["perplexity"] for r in rows if r["model"] == "recovered"),
                     "perplexity_n_processes": _perplexity(student, val, sched["eval_windows"]),
                     "train_seconds": job["seconds"], "wall_seconds_with_start": job["wall_seconds_with_start"]}
        print(f"{args.nproc} processes: max |loss difference| {scale_out['max_abs_loss_difference']:.2e}", flush=True)

    shutil.rmtree(scratch, ignore_errors=True)
    info = machine()
    report = {"machine": info, "data": {"stdlib": sysconfig.get_paths()["stdlib"], "train_files": train_files,
                                        "held_out_files": val_files, "train_bytes": len(train), "held_out_bytes": len(val)},
              "model": {"context": CONTEXT, "width": WIDTH, "depth": DEPTH, "heads": HEADS, "vocab": 256},
              "schedule": {**sched, "batch": BATCH, "dense_lr": 2e-3, **{f"distil_{k}": v for k, v in DISTIL.items()
                                                                       if k != "progress"}},
              "rows": rows, "dense_curve": [r["loss"] for r in dense_curve],
              "dense_trained_on_curve": [r["loss"] for r in longer_curve],
              "distil_curves": {k: [r["loss"] for r in v] for k, v in curves.items()}, "scale_out": scale_out,
              "total_seconds": time.perf_counter() - began}
    (out / "gpt_stdlib.json").write_text(json.dumps(report, indent=1))
    (out / "gpt_stdlib.md").write_text(markdown(report))
    print(markdown(report))
    print(f"wrote {out / 'gpt_stdlib.md'}")


def markdown(report: dict) -> str:
    rows, sched, data = report["rows"], report["schedule"], report["data"]
    dense = rows[0]
    lines = ["# A small GPT on the standard library's source: cut to about half its parameters, then distilled", "",
             header(), "",
             f"Byte-level GPT ({report['model']['depth']} layers, width {report['model']['width']}, "
             f"{report['model']['heads']} heads, context {report['model']['context']}), trained with `shrink.fit(task='lm')` "
             f"for {sched['dense_epochs'] * sched['steps']} steps of {sched['batch']} windows (Adam, lr {sched['dense_lr']}) "
             f"on {data['train_bytes']:,} bytes of {len(data['train_files'])} standard-library modules; perplexity on "
             f"{min(sched['eval_windows'] * report['model']['context'], data['held_out_bytes']):,} held-out bytes of "
             f"{', '.join(data['held_out_files'])}. Distillation: `shrink.fit(teacher=dense, task='lm')`, "
             f"{sched['distil_epochs'] * sched['steps']} steps, T={sched['distil_temperature']}, "
             f"alpha={sched['distil_alpha']}, lr {sched['distil_lr']}. Latency: `shrink.benchmark`, torch runtime, "
             "CPU, batch 1, 1 thread, p50 (p90/p50 above ~1.3: the shared machine was busy). 'dense, trained on' is the dense model given the distillation's steps "
             "as plain training (lr the same): the dense model is not trained to convergence in a few CPU minutes, "
             "so part of what a distilled student gains is that extra training, and this row is the fairer "
             "reference.", "",
             "| model | ranking | budget | params | held-out perplexity | vs dense | vs dense, trained on | p50 ms "
             "(p90/p50) | speed-up |", "|---|---|---|---|---|---|---|---|---|"]
    longer = next((r for r in rows if r["model"] == "dense, trained on"), None)
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['importance']} | {r['budget']} | not run: {r['error']} | | | | | |")
            continue
        ratio = f"{r['params'] / dense['params']:.2f}x"
        vs = f"{r['perplexity'] / dense['perplexity'] - 1:+.1%}" if r["model"] != "dense" else ""
        vs_longer = (f"{r['perplexity'] / longer['perplexity'] - 1:+.1%}"
                     if longer is not None and not r["model"].startswith("dense") else "")
        ms = f"{r['p50_ms']:.2f} ({r['spread']:.2f})" if "p50_ms" in r else ""
        speed = f"{dense['p50_ms'] / r['p50_ms']:.2f}x" if "p50_ms" in r and "p50_ms" in dense else ""
        lines.append(f"| {r['model']} | {r['importance']} | {r['budget']} | {r['params']:,} ({ratio}) | "
                     f"{r['perplexity']:.3f} | {vs} | {vs_longer} | {ms} | {speed} |")
    s = report["scale_out"]
    if s:
        lines += ["", f"## The distillation of {s['cut']} in {s['nproc']} processes (torchrun, gloo)", "",
                  f"Same global batch ({sched['batch']} windows: {sched['batch'] // s['nproc']} per process), same "
                  f"windows step for step, same starting weights. Mean training loss per {sched['steps']} steps; "
                  f"largest difference {s['max_abs_loss_difference']:.2e}. Held-out perplexity "
                  f"{s['perplexity_one_process']:.4f} (1 process) vs {s['perplexity_n_processes']:.4f} "
                  f"({s['nproc']} processes); training {s['train_seconds']:.0f} s in {s['nproc']} processes "
                  f"({s['wall_seconds_with_start']:.0f} s with torchrun's start).", "",
                  f"| steps | loss, 1 process | loss, {s['nproc']} processes |", "|---|---|---|"]
        for i, (a, b) in enumerate(zip(s["one_process"], s["n_processes"])):
            lines.append(f"| {(i + 1) * sched['steps']} | {a:.5f} | {b:.5f} |")
    lines += ["", f"Whole run: {report['total_seconds']:.0f} s."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()

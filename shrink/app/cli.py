"""`shrink analyze | compress | export | bench | demo`: arguments in, one public call per command.

Exit codes: 0 ok, 1 a check failed (ONNX parity), 2 bad usage or input.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from ..errors import CheckFailedError, ShrinkError, ShrinkValueError
from .terminal import cli_words, quiet_libraries

log = logging.getLogger(__name__)


def _model_args(p: argparse.ArgumentParser, required: bool = True, hf: bool = False) -> None:
    if hf:  # --model or --hf
        p.add_argument("--hf", metavar="PATH", help="a local Hugging Face model folder instead of --model")
    p.add_argument("--model", required=required and not hf, help="package.module:factory returning the un-pruned model")
    p.add_argument("--weights", help="state_dict as .pt/.pth (loaded weights_only) or .safetensors")
    p.add_argument("--input", action="append", default=[], metavar="SHAPE",
                   help="example input: 1x3x224x224, int64:1x16, or name=int64:1x16 (repeat for several)")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="shrink", description="Make trained PyTorch models physically smaller.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and every library's log lines")
    parser.add_argument("-v", "--verbose", action="store_true", help="show shrink's progress and other libraries' warnings")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("analyze", help="print the prunable groups and the layers kept whole")
    _model_args(p, hf=True)
    p.add_argument("--ignore", action="append", default=[], help="qualified name kept whole (repeatable)")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.add_argument("--no-check", action="store_true",
                   help="only trace; by default every group is trial-cut to list what compress would keep whole")
    p.add_argument("--trace-timeout", type=float, default=180.0, metavar="SECONDS",
                   help="time tracing may take (default 180)")

    p = sub.add_parser("compress", help="compress a checkpoint into an output folder")
    _model_args(p, hf=True)
    p.add_argument("--ratio", type=float, help="fraction of each group's channels removed (default 0.5)")
    p.add_argument("--speedup", type=float, help="target: this many times faster, measured on --runtime/--device/--batch")
    p.add_argument("--latency-ms", type=float, help="target: at most this many ms per call, measured")
    p.add_argument("--macs", type=float, help="budget: at most this fraction of the original MACs")
    p.add_argument("--params", type=float, help="budget: at most this fraction of the original parameters")
    p.add_argument("--runtime", choices=["onnxruntime", "torch", "torch-fp16"], default="onnxruntime",
                   help="where speed targets and --round-to auto are measured")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--batch", type=int, default=1, help="batch size speed targets are measured at")
    p.add_argument("--scope", choices=["local", "global"], default="local")
    p.add_argument("--norm", type=int, choices=[1, 2], default=1)
    p.add_argument("--importance", choices=["l1", "l2", "activation", "taylor"],
                   help="how units are ranked (default l1 = --norm 1); activation and taylor rank on --data")
    p.add_argument("--calibration-batches", type=int, default=8, metavar="N",
                   help="training batches activation/taylor importance run (default 8)")
    p.add_argument("--reinit", choices=["trained", "initial", "random"], default="trained")
    p.add_argument("--initial", help="state_dict from before training (for --reinit initial)")
    p.add_argument("--ignore", action="append", default=[], help="qualified name kept whole (repeatable)")
    p.add_argument("--round-to", type=_round_to, help="keep widths multiples of N, or 'auto' (measured fast widths)")
    p.add_argument("--strict", action="store_true",
                   help="fail instead of keeping whole a group whose cut breaks the model")
    p.add_argument("--trace-timeout", type=float, default=180.0, metavar="SECONDS",
                   help="time tracing may take (default 180)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--stream", action="store_true",
                   help="with --hf: compress the folder layer by layer from its shards, never loading it whole "
                        "(any size; chosen by itself when the weights exceed the memory available); writes the "
                        "Hugging Face folder only, no ONNX")
    p.add_argument("--onnx", action=argparse.BooleanOptionalAction, default=True, help="export and check ONNX")
    p.add_argument("--bench", action="store_true", help="benchmark latency before/after")
    p.add_argument("--data", help="package.module:loaders returning (train_loader, val_loader), or a plain text "
                   "file for a language model (windows as long as --input; byte-level ids, or the --hf folder's tokenizer)")
    p.add_argument("--metric", choices=["accuracy", "perplexity"],
                   help="measured on --data's validation data (default: perplexity for a text file, else accuracy)")
    p.add_argument("--epochs", type=int, default=0, help="fine-tuning epochs (needs --data)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--no-distill", action="store_true", help="fine-tune on labels only")
    p.add_argument("--steps", type=int, default=1, help="reach --ratio in this many cut + fine-tune rounds")
    p.add_argument("--force", action="store_true", help="replace an existing --out folder")

    p = sub.add_parser("export", help="export a model or a shrink folder to a checked ONNX file")
    p.add_argument("source", nargs="?", help="a shrink output folder (else --model)")
    _model_args(p, required=False)
    p.add_argument("--out", required=True, help="the .onnx file to write")
    p.add_argument("--static-batch", action="store_true")
    p.add_argument("--atol", type=float, default=1e-4)
    p.add_argument("--force", action="store_true", help="replace an existing file")

    p = sub.add_parser("bench", help="latency of models, shrink folders or .onnx files")
    p.add_argument("sources", nargs="*", help="shrink output folders and/or .onnx files")
    _model_args(p, required=False)
    p.add_argument("--runtime", action="append", choices=["torch", "torch-fp16", "onnxruntime"])
    p.add_argument("--device", action="append", choices=["cpu", "cuda"])
    p.add_argument("--batch", action="append", type=int)
    p.add_argument("--threads", type=int)
    p.add_argument("--warmup", type=int, help="untimed calls (default: ~0.5 s worth)")
    p.add_argument("--iters", type=int, help="timed calls (default: ~6 s worth, more when too noisy to rank)")
    p.add_argument("--markdown", help="also write the table to this file")
    p.add_argument("--force", action="store_true", help="replace an existing --markdown file")

    p = sub.add_parser("demo", help="the whole job on the bundled digits, no arguments needed")
    p.add_argument("--out", default="shrink-demo")
    p.add_argument("--quick", action="store_true", help="a reduced setting (for tests)")
    p.add_argument("--force", action="store_true", help="replace an existing --out that is not a demo folder")
    return parser


def _round_to(text: str):
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--round-to takes a positive int or 'auto'; got {text!r}") from None


def _model(args):
    from . import loading

    if getattr(args, "hf", None):
        if args.model or args.weights:
            raise ShrinkValueError("--hf PATH names the model and its weights: leave out --model and --weights")
        from .hf_loading import load_hf

        return load_hf(args.hf)
    if not args.model:
        raise ShrinkValueError("name the model with --model package.module:factory, or --hf PATH")
    model = loading.build_model(args.model)
    if args.weights:
        loading.load_weights(model, loading.read_state_dict(args.weights), source=f"--weights {args.weights}")
    return model.eval()


def _folder_model(folder: str, args):
    """Rebuild a compressed model from a shrink folder and the factory named with --model.

    A folder's files are data only: the factory it records is never imported. It is a hint,
    and when --model names another factory the folder is refused (it was made from another model).
    """
    from ..deploy import store
    from . import loading

    doc = store.read_plan_json(folder)
    recorded = doc.get("model_factory")
    if not args.model:
        hint = f" (the folder says it was made from {recorded!r}; check that before you pass it)" if recorded else ""
        raise ShrinkValueError(
            f"{folder!r} needs --model package.module:factory, the code that builds its un-pruned model{hint}. "
            "shrink never imports code named by a folder's files."
        )
    if isinstance(recorded, str) and recorded != args.model:
        raise ShrinkValueError(
            f"--model {args.model!r} is not the factory {folder!r} was made from ({recorded!r}); "
            "pass that factory with --model, or compress again from this one."
        )
    return store.load(folder, loading.build_model(args.model)).eval(), doc


def _inputs_for(args, doc=None, model=None):
    from .._util import inputs as _inputs
    from . import loading

    if args.input:
        return loading.parse_inputs(args.input)
    if doc is not None:
        return _inputs.from_spec(doc["inputs"])
    if getattr(args, "hf", None):
        from .hf_loading import default_inputs

        return default_inputs(model)
    return loading.parse_inputs([])


def cmd_analyze(args) -> int:
    from ..cut.analyze import analyze

    model = _model(args)
    report = analyze(model, _inputs_for(args, model=model), ignore=args.ignore, check=not args.no_check,
                     trace_timeout=args.trace_timeout)
    print(json.dumps(report.to_dict(), indent=1) if args.json else report)
    return 0


def cmd_compress(args) -> int:
    from .._util.atomic import check_destination
    from . import loading
    from .job import Quality, Target, compress_to_folder

    # Usage and output paths first: nothing is loaded or computed for a run that cannot finish.
    if args.epochs and not args.data:
        raise ShrinkValueError(f"--epochs {args.epochs} fine-tunes on data: pass --data package.module:loaders "
                               "(returning (train_loader, val_loader)), or drop --epochs")
    if args.epochs < 0 or args.steps < 1:
        raise ShrinkValueError("--epochs must be >= 0 and --steps >= 1")
    if not 0 < args.lr < float("inf"):
        raise ShrinkValueError(f"--lr must be a finite number > 0, e.g. --lr 1e-3; got {args.lr}")
    if args.importance in ("activation", "taylor") and not args.data:
        raise ShrinkValueError(f"--importance {args.importance} ranks units on data: pass --data (package.module:"
                               "loaders, or a text file), or use --importance l1")
    if args.calibration_batches < 1:
        raise ShrinkValueError(f"--calibration-batches must be >= 1; got {args.calibration_batches}")
    if args.importance and args.norm != 1:
        raise ShrinkValueError("give --importance or --norm, not both (--importance l2 is --norm 2)")
    text = bool(args.data) and _is_text(args.data)
    if text and args.epochs:
        raise ShrinkValueError("fine-tuning on a text file is not supported yet (fit trains classifiers on "
                               "(inputs, labels)); drop --epochs, or pass --data package.module:loaders")
    check_destination(args.out, overwrite=args.force, hint="pass --force")
    if args.stream or (args.hf and _larger_than_memory(args.hf)):
        return _compress_streamed(args)
    model = _model(args)
    initial = None
    if args.reinit == "initial":
        if not args.initial:
            raise ShrinkValueError("--reinit initial needs --initial, the state_dict saved before training")
        initial = loading.read_state_dict(args.initial)
    inputs = _inputs_for(args, model=model)
    train_loader = val_loader = None
    if text:
        train_loader, val_loader = _text_loaders(args.data, model, inputs, args.hf)
    elif args.data:
        train_loader, val_loader = _loaders(args.data)
    quality = Quality(metric=args.metric or ("perplexity" if text else "accuracy"), importance=args.importance,
                      calibration_batches=args.calibration_batches, data=args.data)
    doc = compress_to_folder(
        model, inputs, args.out, ratio=args.ratio, scope=args.scope,
        target=Target(args.speedup, args.latency_ms, args.macs, args.params, args.runtime, args.device, args.batch),
        norm=args.norm, reinit=args.reinit, initial_state=initial, ignore=args.ignore, round_to=args.round_to,
        strict=args.strict, trace_timeout=args.trace_timeout, onnx=args.onnx, bench=args.bench,
        train_loader=train_loader, val_loader=val_loader, finetune_epochs=args.epochs, lr=args.lr,
        distill=not args.no_distill, steps=args.steps, overwrite=args.force, model_spec=args.model,
        hf_source=args.hf, quality=quality,
    )
    _print_summary(doc)
    return 0


def _larger_than_memory(folder: str) -> bool:
    """The folder's weights do not fit in the memory available now (an in-memory compress cannot run)."""
    weights = sum(f.stat().st_size for f in Path(folder).glob("*.safetensors")) if Path(folder).is_dir() else 0
    try:
        available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return False
    if weights > available:
        log.warning("the weights of %s (%.1f GB) exceed the memory available (%.1f GB): compressing it "
                    "layer by layer from its shards (--stream)", folder, weights / 1e9, available / 1e9)
        return True
    return False


def _compress_streamed(args) -> int:
    """``compress --hf FOLDER --stream``: shrink.compress_folder, with the options it takes."""
    from ..deploy.stream import compress_folder

    if not args.hf:
        raise ShrinkValueError("--stream compresses a Hugging Face folder: name it with --hf PATH")
    given = [flag for flag, value in (
        ("--speedup", args.speedup), ("--latency-ms", args.latency_ms), ("--macs", args.macs),
        ("--params", args.params), ("--importance", args.importance), ("--initial", args.initial),
        ("--ignore", args.ignore), ("--round-to", args.round_to), ("--data", args.data), ("--epochs", args.epochs),
        ("--bench", args.bench), ("--strict", args.strict), ("--steps", args.steps > 1)) if value]
    given += ["--scope global"] if args.scope != "local" else []
    given += [f"--reinit {args.reinit}"] if args.reinit != "trained" else []
    if given:
        raise ShrinkValueError(f"a streamed compress (--stream, or a folder larger than memory) takes --ratio and "
                               f"--norm only; drop {', '.join(given)}, or compress in memory without --stream")
    report = compress_folder(args.hf, args.out, ratio=0.5 if args.ratio is None else args.ratio, norm=args.norm,
                             overwrite=args.force, progress=True, trace_timeout=args.trace_timeout)
    print(f"streamed {report.layers} layers: {report.params_before:,} -> {report.params_after:,} parameters "
          f"({report.params_ratio:.2f}x fewer); read {report.bytes_read / 1e9:.2f} GB, wrote "
          f"{report.bytes_written / 1e9:.2f} GB in {report.seconds:.1f} s -> {args.out}")
    for name, (before, after) in sorted(report.config.items()):
        print(f"  {name}: {before} -> {after}")
    return 0


def _is_text(spec: str) -> bool:
    """--data names a text file (a path that exists, or ends in .txt) rather than package.module:loaders."""
    path = Path(spec)
    if path.suffix == ".txt" and not path.is_file():
        raise ShrinkValueError(f"--data {spec!r}: no such text file")
    return path.is_file()


def _text_loaders(spec: str, model, inputs, hf_folder):
    """(train, val) windows of a text file, as long as the example input's token ids."""
    import torch
    from torch import nn

    from .data import text_loaders

    values = list(inputs.values()) if isinstance(inputs, dict) else list(inputs) if isinstance(inputs, tuple) else [inputs]
    ids = next((v for v in values if isinstance(v, torch.Tensor) and not v.is_floating_point() and v.dim() >= 1), None)
    if ids is None:
        raise ShrinkValueError(f"--data {spec!r} is a text file, data for a language model: its example input must be "
                               "token ids, e.g. --input int64:1x128 (the windows are that long)")
    vocab = getattr(getattr(model, "config", None), "vocab_size", None)
    if vocab is None:
        vocab = next((m.num_embeddings for m in model.modules() if isinstance(m, nn.Embedding)), None)
    return text_loaders(spec, seq_len=int(ids.shape[-1]), vocab_size=vocab, tokenizer_folder=hf_folder)


def _loaders(spec: str):
    import importlib

    module_name, _, attr = spec.partition(":")
    try:
        fn = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ShrinkValueError(f"--data {spec!r}: cannot import {attr!r} from {module_name!r}: {exc}") from exc
    except Exception as exc:  # noqa: BLE001 - the user's module ran and failed (SyntaxError too)
        raise ShrinkValueError(f"--data {spec!r}: importing {module_name!r} raised {type(exc).__name__}: "
                               f"{str(exc)[:200]}; fix the module, or pass --debug") from exc
    try:
        loaders = fn()
    except Exception as exc:  # noqa: BLE001
        raise ShrinkValueError(f"--data {spec!r}: calling {attr}() raised {type(exc).__name__}: {str(exc)[:200]}; "
                               "pass --debug to see the traceback") from exc
    if not isinstance(loaders, (tuple, list)) or len(loaders) != 2:
        raise ShrinkValueError(f"--data {spec!r} must return (train_loader, val_loader)")
    return loaders


def _print_summary(doc: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"shrink → {doc.get('out', '')}", title_justify="left")
    for col in ("", "before", "after", "ratio"):
        table.add_column(col)
    for key in ("params", "macs"):
        d = doc[key]
        table.add_row(key, f"{d['before']:,}", f"{d['after']:,}", f"÷{d['ratio']:.2f}")
    from .report import format_value

    metric = doc.get("quality", {}).get("metric", "accuracy")
    for row in doc.get("quality", {}).get("stages", []):
        table.add_row(f"{metric} {row['stage']}", "", format_value(metric, row["value"]), "")
    for row in doc.get("latency", []):
        table.add_row(f"p50 {row['runtime']} {row['device']} b{row['batch']}", "", f"×{row['speedup']:.2f} faster",
                      f"eff {row['efficiency']:.2f}")
    if doc.get("export"):
        table.add_row("ONNX parity (max rel diff)", "", f"{doc['export']['max_rel_diff']:.1e}", "")
    m = doc.get("measured")
    if m:
        (kind, value), = m["target"].items()
        table.add_row(f"target {kind}={value} ({m['runtime']} {m['device']} b{m['batch_size']})",
                      f"predicted ×{m['predicted_speedup']:.2f}", f"measured ×{m['speedup']:.2f}",
                      f"{m['speedup_low']:.2f}-{m['speedup_high']:.2f}")
    console = Console()
    console.print(table)
    for warning in doc.get("warnings", []):
        console.print(f"[bold red]WARNING[/]: {warning}")


def cmd_export(args) -> int:
    from .._util.atomic import check_destination
    from ..deploy.export import export_onnx

    if not args.out.endswith(".onnx"):
        raise ShrinkValueError(f"--out must name a .onnx file; got {args.out!r}")
    check_destination(args.out, overwrite=args.force, hint="pass --force", kind="file")
    if args.source:
        model, doc = _folder_model(args.source, args)
    elif args.model:
        model, doc = _model(args), None
    else:
        raise ShrinkValueError("give a shrink output folder or --model package.module:factory")
    rep = export_onnx(model, _inputs_for(args, doc), args.out, dynamic_batch=not args.static_batch,
                      atol=args.atol, overwrite=args.force)
    print(f"wrote {rep.path} ({rep.exporter} exporter, opset {rep.opset}, {rep.file_bytes / 2**20:.2f} MiB); "
          f"ONNX Runtime max abs diff {rep.max_abs_diff:.2e}, max rel diff {rep.max_rel_diff:.2e}")
    return 0


def cmd_bench(args) -> int:
    from .._util.atomic import atomic_file, check_destination
    from ..deploy.bench import benchmark

    if args.markdown:  # before the benchmark runs, not after
        check_destination(args.markdown, overwrite=args.force, hint="pass --force", kind="file")
    models, doc = {}, None
    if args.model:
        models["model"] = _model(args)
    for source in args.sources:
        path = Path(source)
        if path.suffix == ".onnx":
            models[path.stem] = str(path)
        else:
            models[path.name], doc = _folder_model(source, args)
    if not models:
        raise ShrinkValueError("nothing to benchmark: give --model, shrink folders or .onnx files")
    rep = benchmark(models, _inputs_for(args, doc), runtimes=tuple(args.runtime or ("torch", "onnxruntime")),
                    devices=tuple(args.device or ("cpu", "cuda")), batch_sizes=tuple(args.batch or (1, 32)),
                    threads=args.threads, warmup=args.warmup, iters=args.iters)
    print(rep.to_markdown())
    if args.markdown:
        with atomic_file(args.markdown, overwrite=args.force, hint="pass --force") as tmp:
            tmp.write_text(rep.to_markdown())
    return 0


def cmd_demo(args) -> int:
    from .._util.atomic import check_destination
    from .demo import is_demo_folder, run_demo

    # The demo replaces its own earlier folder; anything else needs --force, checked before training.
    check_destination(args.out, overwrite=args.force or is_demo_folder(args.out), hint="pass --force")

    doc = run_demo(args.out, quick=args.quick)
    _print_summary(doc)
    return 0


COMMANDS = {"analyze": cmd_analyze, "compress": cmd_compress, "export": cmd_export, "bench": cmd_bench,
            "demo": cmd_demo}


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on bad usage, 0 on --help
        return int(exc.code or 0)
    with quiet_libraries(verbose=args.verbose, debug=args.debug):
        try:
            return COMMANDS[args.command](args)
        except CheckFailedError as exc:
            if args.debug:
                raise
            print(f"shrink: check failed: {cli_words(exc)}", file=sys.stderr)
            return 1
        except ShrinkError as exc:
            if args.debug:
                raise
            print(f"shrink: error: {cli_words(exc)}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            if args.debug:
                raise
            # Outputs are written under temporary names and renamed at the end: nothing half-done is left.
            print("shrink: interrupted; no output was written or changed", file=sys.stderr)
            return 130


if __name__ == "__main__":
    sys.exit(main())

"""`shrink demo`: the main job, end to end, on the bundled handwritten digits. No downloads."""

from __future__ import annotations

import logging
import time

import torch

from .data import digits_loaders
from .job import compress_to_folder
from ..recover.train import evaluate, fit
from ..zoo import DigitsNet

log = logging.getLogger(__name__)


DEMO_FACTORY = "shrink.zoo:DigitsNet"


def is_demo_folder(out) -> bool:
    """Whether ``out`` is a folder an earlier `run_demo` wrote (which the demo may replace)."""
    import json
    from pathlib import Path

    plan = Path(out) / "plan.json"
    try:
        return Path(out).is_dir() and json.loads(plan.read_text()).get("model_factory") == DEMO_FACTORY
    except (OSError, ValueError, AttributeError):
        return False


def run_demo(out: str = "shrink-demo", *, quick: bool = False, progress: bool = True, seed: int = 0) -> dict:
    """Train a small residual CNN on the digits, cut it by half, distil, export, benchmark, report.

    Args:
        out: folder to write (replaced if it exists: it is the demo's own folder).
        quick: a reduced setting (fewer epochs and iterations) for tests.
        progress: show progress bars.
        seed: seed of data split, initialisation and training.

    Returns:
        The report's numbers, with ``"out"`` the folder written.
    """
    torch.manual_seed(seed)
    started = time.perf_counter()
    train_loader, val_loader = digits_loaders(seed=seed)
    model = DigitsNet(width=32)
    print(f"1/3 training a small residual CNN on scikit-learn's digits ({len(train_loader.dataset)} images)")
    fit(model, train_loader, epochs=3 if quick else 15, lr=3e-3, progress=progress)
    print(f"    accuracy {evaluate(model, val_loader):.2%} on {len(val_loader.dataset)} held-out images")
    print("2/3 cutting half of every group's channels, distilling from the original")
    example = torch.randn(1, 1, 8, 8)
    doc = compress_to_folder(
        model, example, out, ratio=0.5, train_loader=train_loader, val_loader=val_loader,
        finetune_epochs=2 if quick else 10, lr=1e-3, onnx=True, bench=True,
        bench_batch_sizes=(1, 32), bench_iters=10 if quick else 100, overwrite=True,
        model_spec=DEMO_FACTORY, progress=progress,
    )
    print(f"3/3 exported, checked and benchmarked in {time.perf_counter() - started:.0f} s; report: {out}/report.md")
    return doc

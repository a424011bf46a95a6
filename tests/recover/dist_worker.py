"""Started by test_distributed.py as `torchrun --nproc_per_node W dist_worker.py OUT`: every case of
dist_cases.py, then rank 0 writes each trained model to OUT/<case>.safetensors and its history to OUT/<case>.json."""

from __future__ import annotations

import faulthandler
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

import dist_cases  # noqa: E402
import shrink  # noqa: E402


def main(out: Path) -> None:
    torch.set_num_threads(1)
    only = os.environ.get("CASES")  # a comma-separated subset, when debugging
    faulthandler.dump_traceback_later(int(os.environ.get("DUMP_AFTER", "100")), exit=True)  # a hang says where
    world, rank = int(os.environ["WORLD_SIZE"]), int(os.environ["RANK"])
    for case, (loader, _) in dist_cases.CASES.items():
        if only and case not in only.split(","):
            continue
        model = dist_cases.model(case)
        history = shrink.fit(model, loader(world), distributed=True, **dist_cases.options(case))
        if rank == 0:
            save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out / f"{case}.safetensors"))
            (out / f"{case}.json").write_text(json.dumps(history))
    # A plain iterable that yields other batches on each rank cannot be split by taking every W-th batch.
    try:
        shrink.fit(dist_cases.model("ddp_list"), dist_cases.batches(4 + rank), distributed=True, progress=False)
    except shrink.ShrinkValueError as exc:
        (out / f"mismatch.{rank}.txt").write_text(str(exc))
    if only and "fsdp_resumed" not in only:
        return
    # Checkpoints of a sharded run: 1 epoch, then a rerun that resumes and goes on to 2.
    path = out / "fsdp.ckpt"
    for epochs in (1, 2):
        model = dist_cases.model("fsdp_list")
        history = shrink.fit(model, dist_cases.batches(dist_cases.GLOBAL // world), checkpoint=path,
                             **{**dist_cases.options("fsdp_list"), "epochs": epochs})
    if rank == 0:
        save_file(dict(model.state_dict()), str(out / "fsdp_resumed.safetensors"))
        (out / "fsdp_resumed.json").write_text(json.dumps(history))


if __name__ == "__main__":
    main(Path(sys.argv[1]))

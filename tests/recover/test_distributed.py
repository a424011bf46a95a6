"""fit under torchrun: 2 CPU processes (gloo) reach the weights of one process with the same global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import dist_cases
import shrink

HERE = Path(__file__).resolve().parent
WORLD = 2


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    """One torchrun job that runs every case of dist_cases.py in 2 processes (about 10 s)."""
    out = tmp_path_factory.mktemp("two_processes")
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(HERE.parent.parent), os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(WORLD),
                          "--standalone", str(HERE / "dist_worker.py"), str(out)],
                         env=env, capture_output=True, text=True, timeout=180)
    if run.returncode:
        pytest.fail(f"torchrun failed ({run.returncode}):\n{run.stdout[-3000:]}\n{run.stderr[-6000:]}")
    return out


def _weights(model) -> dict:
    return {k: v.detach() for k, v in model.state_dict().items()}


def _close(a: dict, b: dict) -> float:
    """The largest element-wise difference between two state dicts with the same keys."""
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


@pytest.mark.parametrize("case", sorted(dist_cases.CASES))
def test_two_processes_reach_the_weights_of_one_with_the_same_global_batch(two_processes, case):
    reference, history = dist_cases.reference(case)
    got = load_file(str(two_processes / f"{case}.safetensors"))
    assert _close(got, _weights(reference)) < 1e-6
    two = json.loads((two_processes / f"{case}.json").read_text())
    assert [r["loss"] for r in two] == pytest.approx([r["loss"] for r in history], abs=1e-6)


def test_the_comparison_tells_one_rank_alone_from_both(two_processes):
    """Rank 0's half of every batch alone (no gradient averaging) ends far from what 2 processes reached."""
    alone = dist_cases.model("ddp_list")
    shrink.fit(alone, dist_cases.batches(dist_cases.GLOBAL // WORLD)[::WORLD], distributed=False, **dist_cases.OPTIONS)
    assert _close(load_file(str(two_processes / "ddp_list.safetensors")), _weights(alone)) > 1e-3


def test_a_sharded_run_resumes_from_its_checkpoint_and_the_file_holds_the_full_weights(two_processes):
    reference, history = dist_cases.reference("fsdp_list")  # 2 epochs without a stop
    resumed = load_file(str(two_processes / "fsdp_resumed.safetensors"))  # 1 epoch, then a rerun to 2
    assert _close(resumed, _weights(reference)) < 1e-6
    assert len(json.loads((two_processes / "fsdp_resumed.json").read_text())) == 2
    stored = load_file(str(two_processes / "fsdp.ckpt"))
    assert all(torch.equal(stored[f"model/{k}"], v) for k, v in resumed.items())


def test_an_iterable_that_differs_between_ranks_is_refused_on_every_rank(two_processes):
    for rank in range(WORLD):
        message = (two_processes / f"mismatch.{rank}.txt").read_text()
        assert "different batches on different ranks" in message and "generator=" in message


def test_accumulating_two_half_batches_equals_one_full_batch():
    full, half = dist_cases.model("ddp_list"), dist_cases.model("ddp_list")
    shrink.fit(full, dist_cases.batches(8), **dist_cases.OPTIONS)
    shrink.fit(half, dist_cases.batches(4), accumulate=2, **dist_cases.OPTIONS)
    assert _close(_weights(full), _weights(half)) < 1e-6
    plain = dist_cases.model("ddp_list")  # the same half batches, a step after each: not the same run
    shrink.fit(plain, dist_cases.batches(4), **dist_cases.OPTIONS)
    assert _close(_weights(full), _weights(plain)) > 1e-3


def test_distributed_true_outside_torchrun_says_how_to_launch(monkeypatch):
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)
    with pytest.raises(shrink.ShrinkValueError, match="torchrun --nproc_per_node"):
        shrink.fit(dist_cases.model("ddp_list"), dist_cases.batches(8), distributed=True, progress=False)


@pytest.mark.parametrize("kwargs, match", [
    ({"accumulate": 0}, "accumulate must be an int >= 1"),
    ({"accumulate": 2.0}, "accumulate must be an int"),
    ({"precision": "fp8"}, "precision must be None, 'bf16' or 'fp16'"),
    ({"precision": "fp16"}, "needs a CUDA device.*precision='bf16'"),
    ({"task": "seq2seq"}, "task must be 'classify'"),
    ({"distributed": "yes"}, "distributed must be 'auto', True or False"),
    ({"shard": True}, "shard=True .* one process.*torchrun"),
    ({"shard": "fsdp"}, "shard must be True or False"),
    ({"checkpoint_every": 0}, "checkpoint_every must be an int >= 1"),
])
def test_bad_options_are_refused_before_training(kwargs, match):
    model = dist_cases.model("ddp_list")
    before = {k: v.clone() for k, v in _weights(model).items()}
    with pytest.raises(shrink.ShrinkValueError, match=match):
        shrink.fit(model, dist_cases.batches(8), progress=False, **kwargs)
    assert _close(before, _weights(model)) == 0


def test_a_checkpoint_that_is_not_a_path_is_refused():
    with pytest.raises(shrink.ShrinkTypeError, match="checkpoint must be a file path"):
        shrink.fit(dist_cases.model("ddp_list"), dist_cases.batches(8), checkpoint=3, progress=False)

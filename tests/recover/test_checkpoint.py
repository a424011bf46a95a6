"""fit(checkpoint=...): a run stopped mid-epoch and rerun with the same path ends where an unstopped one does."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import shrink


class DropoutMLP(nn.Module):
    """Dropout draws from the global RNG every step: a resume that restored no random state would differ."""

    def __init__(self, width: int = 16):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2, width), nn.ReLU(), nn.Dropout(0.3), nn.Linear(width, 2))

    def forward(self, x):
        return self.net(x)


def _loader():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(40, 2, generator=g)
    return DataLoader(TensorDataset(x, (x.sum(1) > 0).long()), batch_size=4, shuffle=True,
                      generator=torch.Generator().manual_seed(5))


def _model():
    torch.manual_seed(0)
    return DropoutMLP()


OPTIONS = dict(epochs=3, lr=1e-2, accumulate=2, progress=False)


class Stop(Exception):
    pass


def _stop_after(model, calls: int):
    seen = [0]

    def hook(module, args):
        seen[0] += 1
        if seen[0] > calls:
            raise Stop

    return model.register_forward_pre_hook(hook)


def _uninterrupted():
    model = _model()
    history = shrink.fit(model, _loader(), **OPTIONS)
    return model, history


@pytest.mark.parametrize("stop_at", [13, 20])  # mid-epoch (epoch 2, after a checkpoint at step 6); an epoch's end
def test_a_stopped_run_resumes_to_the_weights_of_one_never_stopped(tmp_path, stop_at):
    path = tmp_path / "run.ckpt"
    reference, expected = _uninterrupted()
    stopped = _model()
    _stop_after(stopped, stop_at)
    with pytest.raises(Stop):
        shrink.fit(stopped, _loader(), checkpoint=path, checkpoint_every=3, **OPTIONS)
    torch.manual_seed(123)  # another process, another random state: the checkpoint must bring back its own
    fresh = _model()
    history = shrink.fit(fresh, _loader(), checkpoint=path, checkpoint_every=3, **OPTIONS)
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), reference.state_dict().values()))
    assert history == expected
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.ckpt"]  # no temporary files left


def test_without_the_random_state_the_resume_would_differ(tmp_path):
    """The oracle above can fail: dropping the data order and RNG from the file changes the weights."""
    path = tmp_path / "run.ckpt"
    reference, _ = _uninterrupted()
    stopped = _model()
    _stop_after(stopped, 13)
    with pytest.raises(Stop):
        shrink.fit(stopped, _loader(), checkpoint=path, checkpoint_every=3, **OPTIONS)
    from safetensors.torch import load_file, save_file
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    tensors = load_file(str(path))
    blank = {k: (torch.get_rng_state() if k.endswith("/torch") else v) for k, v in tensors.items()}
    save_file(blank, str(path), metadata=meta)
    fresh = _model()
    shrink.fit(fresh, _loader(), checkpoint=path, checkpoint_every=3, **OPTIONS)
    assert not all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), reference.state_dict().values()))


def test_a_finished_run_with_more_epochs_goes_on_from_its_last_epoch(tmp_path):
    path = tmp_path / "run.ckpt"
    reference, expected = _uninterrupted()
    first = _model()
    shrink.fit(first, _loader(), checkpoint=path, **{**OPTIONS, "epochs": 1})
    again = _model()
    assert shrink.fit(again, _loader(), checkpoint=path, **OPTIONS) == expected
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), reference.state_dict().values()))
    # Done: a third call trains nothing and gives the same weights and history back.
    third = _model()
    assert shrink.fit(third, _loader(), checkpoint=path, **OPTIONS) == expected
    assert all(torch.equal(a, b) for a, b in zip(third.state_dict().values(), reference.state_dict().values()))


def test_the_file_is_safetensors_with_its_progress_as_json(tmp_path):
    from safetensors import safe_open

    path = tmp_path / "run.ckpt"
    shrink.fit(_model(), _loader(), checkpoint=path, **{**OPTIONS, "epochs": 1})
    with safe_open(str(path), framework="pt") as f:
        meta = json.loads(f.metadata()["shrink_checkpoint"])
        keys = set(f.keys())
    assert (meta["epoch"], meta["batches"], meta["step"], meta["world_size"]) == (1, 0, 5, 1)
    assert {"model/net.0.weight", "optim/net.0.weight/exp_avg", "rank0/now/torch", "rank0/now/gen.0"} <= keys


def test_a_checkpoint_of_another_model_is_refused(tmp_path):
    path = tmp_path / "run.ckpt"
    shrink.fit(_model(), _loader(), checkpoint=path, **{**OPTIONS, "epochs": 1})
    with pytest.raises(shrink.ShrinkValueError, match="holds another model's weights.*delete the file"):
        shrink.fit(DropoutMLP(width=8), _loader(), checkpoint=path, **OPTIONS)


def test_a_checkpoint_written_with_another_accumulate_is_refused(tmp_path):
    path = tmp_path / "run.ckpt"
    shrink.fit(_model(), _loader(), checkpoint=path, **{**OPTIONS, "epochs": 1})
    with pytest.raises(shrink.ShrinkValueError, match="accumulate=2, this run has accumulate=1: .* Resume with accumulate=2"):
        shrink.fit(_model(), _loader(), checkpoint=path, **{**OPTIONS, "accumulate": 1})


def test_a_file_that_is_no_checkpoint_is_refused(tmp_path):
    path = tmp_path / "run.ckpt"
    path.write_text("not a checkpoint")
    with pytest.raises(shrink.ShrinkValueError, match="is not a shrink checkpoint"):
        shrink.fit(_model(), _loader(), checkpoint=path, **OPTIONS)

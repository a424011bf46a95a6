"""export_onnx: parity on every fixture model, failures leave no file."""

from __future__ import annotations

import onnx
import pytest
import torch

import shrink
from models import ORACLE_MODELS, MultiOutput, TinyMLP, randomize_bn


@pytest.mark.parametrize("name", sorted(ORACLE_MODELS))
def test_parity_on_every_fixture_model(tmp_path, name):
    factory, shape = ORACLE_MODELS[name]
    model, x = randomize_bn(factory()), torch.randn(shape)
    result = shrink.compress(model, x, ratio=0.5)
    rep = shrink.export_onnx(result.model, x, tmp_path / "m.onnx")
    assert rep.max_rel_diff <= 1e-4 and rep.exporter in ("dynamo", "torchscript")
    assert len(rep.batch_sizes) == 2 and rep.file_bytes > 0
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("m.onnx")) == []


def test_dict_outputs_are_named(tmp_path):
    rep = shrink.export_onnx(MultiOutput(), torch.randn(2, 6), tmp_path / "m.onnx")
    assert [o.name for o in rep.outputs] == ["logits", "embedding"]
    assert rep.input_names == ("x",)
    graph = onnx.load(str(tmp_path / "m.onnx")).graph
    assert [o.name for o in graph.output] == ["logits", "embedding"]
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param  # dynamic batch axis


class SampleInSampleOut(torch.nn.Module):
    """diffusers' U-Nets and VAEs: ``forward(sample, ...)`` returns an output whose field is ``sample``."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, sample):
        return {"sample": self.conv(sample)}


def test_output_named_like_an_input_gets_its_own_name(tmp_path):
    rep = shrink.export_onnx(SampleInSampleOut(), torch.randn(1, 3, 8, 8), tmp_path / "m.onnx")
    assert rep.input_names == ("sample",) and [o.name for o in rep.outputs] == ["sample_out"]
    assert any("'sample_out'" in n for n in rep.notes)
    graph = onnx.load(str(tmp_path / "m.onnx")).graph
    assert [i.name for i in graph.input] == ["sample"] and [o.name for o in graph.output] == ["sample_out"]


def test_static_batch(tmp_path):
    rep = shrink.export_onnx(TinyMLP(), torch.randn(2, 2), tmp_path / "m.onnx", dynamic_batch=False)
    assert rep.batch_sizes == (2,) and not rep.dynamic_batch


class _Corrupting(torch.nn.Module):
    """Exports one function and runs another: the parity check must catch it."""

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 3)

    def forward(self, x):
        y = self.fc(x)
        if torch.onnx.is_in_onnx_export() or torch.compiler.is_compiling():
            return y + 1.0
        return y


def test_parity_error_and_no_file_left(tmp_path):
    target = tmp_path / "bad.onnx"
    with pytest.raises(shrink.ParityError, match=r"\['output'\]: 'output': max abs diff 1"):
        shrink.export_onnx(_Corrupting(), torch.randn(2, 4), target)
    assert list(tmp_path.iterdir()) == []


def test_corrupted_weight_is_caught(tmp_path, monkeypatch):
    """Change a weight inside the file after export: the check must fail and delete the file."""
    import shrink.deploy.export as ex

    real = ex.check_parity

    def corrupt_then_check(path, *args, **kwargs):
        proto = onnx.load(str(path))
        init = proto.graph.initializer[0]
        arr = onnx.numpy_helper.to_array(init).copy()
        arr.flat[0] += 1.0
        init.CopyFrom(onnx.numpy_helper.from_array(arr, init.name))
        onnx.save(proto, str(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(ex, "check_parity", corrupt_then_check)
    with pytest.raises(shrink.ParityError):
        shrink.export_onnx(TinyMLP(), torch.randn(3, 2), tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []


def test_existing_file_is_refused(tmp_path):
    target = tmp_path / "m.onnx"
    target.write_bytes(b"mine")
    with pytest.raises(shrink.ShrinkValueError, match="already exists"):
        shrink.export_onnx(TinyMLP(), torch.randn(2, 2), target)
    assert target.read_bytes() == b"mine"


def test_export_failure_is_one_clear_error_listing_every_exporter(tmp_path, monkeypatch):
    def broken_exporter(model, args, f, **kwargs):
        open(f, "wb").write(b"half a file")
        raise RuntimeError(f"{'dynamo' if kwargs['dynamo'] else 'jit'} exploded")

    monkeypatch.setattr(torch.onnx, "export", broken_exporter)
    with pytest.raises(shrink.ShrinkValueError, match="dynamo exporter: RuntimeError: dynamo exploded; "
                                                      "torchscript exporter: RuntimeError: jit exploded"):
        shrink.export_onnx(TinyMLP(), torch.randn(2, 2), tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []


def test_bad_suffix(tmp_path):
    with pytest.raises(shrink.ShrinkValueError, match=".onnx"):
        shrink.export_onnx(TinyMLP(), torch.randn(2, 2), tmp_path / "m.bin")

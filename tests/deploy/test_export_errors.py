"""export_onnx: bad destinations, bad tolerances, unsupported operators, and the caller's train mode."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import shrink
from models import ConvBN, TinyMLP

X = torch.randn(2, 2)


def test_path_under_a_regular_file(tmp_path):
    (tmp_path / "notes").write_text("mine")
    with pytest.raises(shrink.ShrinkValueError, match="'.*notes' is a file, not a folder"):
        shrink.export_onnx(TinyMLP(), X, tmp_path / "notes" / "m.onnx")
    assert (tmp_path / "notes").read_text() == "mine"


def test_path_that_is_a_folder_is_not_deleted_by_overwrite(tmp_path):
    (tmp_path / "m.onnx").mkdir()
    (tmp_path / "m.onnx" / "keep").write_text("mine")
    with pytest.raises(shrink.ShrinkValueError, match="is a folder, not a file"):
        shrink.export_onnx(TinyMLP(), X, tmp_path / "m.onnx", overwrite=True)
    assert (tmp_path / "m.onnx" / "keep").read_text() == "mine"


@pytest.mark.parametrize("atol", [math.nan, -1.0, math.inf, "1e-4"])
def test_atol_must_be_a_finite_non_negative_number(tmp_path, atol):
    with pytest.raises(shrink.ShrinkValueError, match="atol must be a number >= 0"):
        shrink.export_onnx(TinyMLP(), X, tmp_path / "m.onnx", atol=atol)
    assert not any(tmp_path.iterdir())


def test_opset_must_be_an_int(tmp_path):
    with pytest.raises(shrink.ShrinkValueError, match="opset must be an int >= 7"):
        shrink.export_onnx(TinyMLP(), X, tmp_path / "m.onnx", opset="18")


def test_train_mode_of_the_caller_comes_back(tmp_path):
    model = ConvBN().train()
    model.bn2.eval()  # a mixed state, as after freezing some BatchNorms
    modes = {n: m.training for n, m in model.named_modules()}
    shrink.export_onnx(model, torch.randn(2, 3, 16, 16), tmp_path / "m.onnx")
    assert {n: m.training for n, m in model.named_modules()} == modes


class _Eig(nn.Module):
    """torch.linalg.eigvals has no ONNX translation."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return torch.linalg.eigvals(self.fc(x).reshape(-1, 2, 2)).real


def test_unsupported_operator_is_named_with_what_to_do(tmp_path):
    with pytest.raises(shrink.ShrinkValueError, match=r"(?i)the operator 'aten\.linalg_eig(vals)?' has no ONNX translation.*"
                                                      r"another opset"):
        shrink.export_onnx(_Eig(), torch.randn(2, 4), tmp_path / "m.onnx")
    assert not any(tmp_path.iterdir())


def test_nan_example_inputs_are_refused_not_reported_as_a_parity_failure(tmp_path):
    x = torch.randn(2, 2)
    x[0, 0] = math.nan
    with pytest.raises(shrink.ShrinkValueError, match="contain NaN or infinite values"):
        shrink.export_onnx(TinyMLP(), x, tmp_path / "m.onnx")

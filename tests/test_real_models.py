"""Issue 9: the architectures people have, written as their public code writes them (real_models.py).

For each pattern: compress at default settings works, output shapes stay, parameters drop,
save -> load gives identical outputs, and ONNX Runtime agrees with PyTorch.
"""

from __future__ import annotations

import pytest
import torch

import shrink
from real_models import PATTERNS
from shrink._util import inputs as _inputs

# Exported with a fixed batch: Swin's window_reverse computes B = int(windows.shape[0] / ...), which
# the exporter freezes (the uncut model fails dynamic-batch parity too); nested (h, c) inputs are
# batched along dimension 1.
STATIC_BATCH = {5, 9}
CASES = sorted(PATTERNS)


def _outputs(model, x) -> dict:
    args, kwargs = _inputs.call_args(x)
    with torch.no_grad():
        return _inputs.flatten_outputs(model.eval()(*args, **kwargs))


@pytest.mark.parametrize("pattern", CASES)
def test_compress_save_load_export(pattern, tmp_path):
    factory, inputs = PATTERNS[pattern]
    torch.manual_seed(0)
    model, x = factory().eval(), inputs()
    before = _outputs(model, x)
    result = shrink.compress(model, x)
    after = _outputs(result.model, x)
    assert {k: v.shape for k, v in after.items()} == {k: v.shape for k, v in before.items()}
    assert result.after.params < result.before.params
    assert all(torch.equal(before[k], v) for k, v in _outputs(model, x).items())  # the original is untouched

    shrink.save(result, tmp_path / "out")
    torch.manual_seed(1)  # a fresh instance with other weights: load must replace them all
    loaded = shrink.load(tmp_path / "out", factory())
    again = _outputs(loaded, x)
    assert all(torch.equal(after[k], again[k]) for k in after)

    report = shrink.export_onnx(result.model, x, tmp_path / "model.onnx", dynamic_batch=pattern not in STATIC_BATCH)
    assert report.max_rel_diff <= 1e-4

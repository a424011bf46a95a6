"""export_onnx at default settings: batch-1 examples keep a dynamic batch, KV caches, quiet exporters."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import shrink
from models import ConvBN, randomize_bn


def _run_ort(path, feeds):
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {i.name: feeds[i.name] for i in session.get_inputs()})


def test_batch_one_conv_net_accepts_batch_four(tmp_path):
    torch.manual_seed(0)
    model = randomize_bn(ConvBN()).eval()
    rep = shrink.export_onnx(model, torch.randn(1, 3, 16, 16), tmp_path / "m.onnx")
    assert rep.batch_sizes == (1, 3) and any("batch of 2" in n for n in rep.notes)
    x4 = torch.randn(4, 3, 16, 16)
    (got,) = _run_ort(tmp_path / "m.onnx", {rep.input_names[0]: x4.numpy()})
    with torch.no_grad():
        np.testing.assert_allclose(got, model(x4).numpy(), rtol=1e-4, atol=1e-5)


def test_sequence_first_model_gets_its_batch_axis(tmp_path):
    torch.manual_seed(0)
    model = nn.LSTM(4, 8).eval()  # inputs (seq, batch, features)
    x = torch.randn(5, 1, 4)
    rep = shrink.export_onnx(model, x, tmp_path / "lstm.onnx", batch_dim=1)
    assert rep.batch_sizes == (1, 3)
    x4 = torch.randn(5, 4, 4)
    got = _run_ort(tmp_path / "lstm.onnx", {rep.input_names[0]: x4.numpy()})
    with torch.no_grad():
        np.testing.assert_allclose(got[0], model(x4)[0].numpy(), rtol=1e-4, atol=1e-5)


def test_bad_batch_dim_is_refused(tmp_path):
    with pytest.raises(shrink.ShrinkValueError, match="batch_dim"):
        shrink.export_onnx(nn.Linear(2, 2), torch.randn(1, 2), tmp_path / "m.onnx", batch_dim=-1)


transformers = pytest.importorskip("transformers")


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_hf_causal_lm_at_defaults_exports_from_batch_one(name, tmp_path, capfd):
    from hf_models import FAMILIES

    factory, inputs = FAMILIES[name]
    model = factory()
    assert model.config.use_cache is True
    result = shrink.compress(model, inputs(), ratio=0.5)
    rep = shrink.export_onnx(result.model, inputs(), tmp_path / "m.onnx")
    assert rep.batch_sizes == (1, 3) and rep.max_rel_diff <= 1e-4
    assert any("use_cache=False" in n for n in rep.notes)
    assert result.model.config.use_cache is True  # restored after the export
    out, err = capfd.readouterr()
    assert "[torch.onnx]" not in out + err and "graph(" not in out + err
    x5 = inputs(batch=5)
    (logits, *_) = _run_ort(tmp_path / "m.onnx", {"input_ids": x5["input_ids"].numpy()})
    with torch.no_grad():
        expected = result.model(**x5, use_cache=False).logits.numpy()
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4)


def test_encoder_decoder_at_defaults_exports_without_its_cache_object(tmp_path):
    from hf_models import FAMILIES

    factory, inputs = FAMILIES["t5"]  # builds an EncoderDecoderCache unless the call says use_cache=False
    result = shrink.compress(factory(), inputs(), ratio=0.5)
    rep = shrink.export_onnx(result.model, inputs(), tmp_path / "t5.onnx")
    assert rep.batch_sizes == (1, 3) and rep.max_rel_diff <= 1e-4
    assert result.model.config.use_cache is True and not result.model._forward_pre_hooks


@pytest.mark.slow
@pytest.mark.parametrize("name", ["bert", "roberta", "distilbert", "gpt2", "gpt_neox", "opt", "llama", "mistral",
                                  "qwen2", "falcon", "phi", "phi3", "bloom", "t5", "bart", "vit", "whisper"])
def test_every_hf_family_exports_from_batch_one(name, tmp_path):
    from hf_models import FAMILIES

    factory, inputs = FAMILIES[name]
    result = shrink.compress(factory(), inputs(), ratio=0.5)
    rep = shrink.export_onnx(result.model, inputs(), tmp_path / "m.onnx")
    assert rep.batch_sizes == (1, 3) and rep.max_rel_diff <= 1e-4

"""Hugging Face Phi-3: the fused ``gate_up_proj`` (``gate, up = gate_up.chunk(2, dim=-1)``) is cut by unit."""

from __future__ import annotations

import pytest
import torch

import shrink
from oracle import masked_reference

T = pytest.importorskip("transformers")


def phi3():
    config = T.Phi3Config(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                          pad_token_id=0, bos_token_id=1, eos_token_id=2)
    return T.Phi3ForCausalLM(config).eval()


def _inputs():
    return {"input_ids": torch.randint(0, 100, (1, 8), generator=torch.Generator().manual_seed(0))}


def _logits(model, x):
    with torch.no_grad():
        return model(**x).logits


def test_phi3_gate_up_cut_by_unit_and_config_follows(tmp_path):
    model, x = phi3(), _inputs()
    result = shrink.compress(model, x)
    mlp = result.model.model.layers[0].mlp
    assert mlp.down_proj.in_features == 32  # 64 units, ratio 0.5
    assert mlp.gate_up_proj.out_features == 2 * mlp.down_proj.in_features
    assert result.model.config.intermediate_size == 32
    assert result.after.params <= 2 / 3 * result.before.params
    assert _logits(result.model, x).shape == _logits(model, x).shape

    shrink.save_pretrained(result, tmp_path / "hf")
    again = T.AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    assert torch.equal(_logits(again, x), _logits(result.model, x))
    loaded = shrink.load(shrink.save(result, tmp_path / "o"), phi3())
    assert torch.equal(_logits(loaded, x), _logits(result.model, x))
    rep = shrink.export_onnx(result.model, x, tmp_path / "phi3.onnx")
    assert rep.max_rel_diff <= 1e-4


def test_phi3_gate_up_cut_equals_masked():
    model, x = phi3(), _inputs()
    ratio = {f"model.layers.{i}.mlp.gate_up_proj": 0.5 for i in range(2)}
    result = shrink.compress(model, x, ratio=ratio, uniform=False)
    kept = result.plan.kept["model.layers.0.mlp.gate_up_proj"]["out"]
    assert kept[32:] == [k + 64 for k in kept[:32]]  # gate row j and up row 64 + j go together
    ref = masked_reference(model, result.plan)
    expected, got = _logits(ref, x), _logits(result.model, x)
    assert torch.allclose(expected, got, atol=1e-5), float((expected - got).abs().max())

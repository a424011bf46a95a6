"""Models shipped in bfloat16/float16 export too: ONNX Runtime's CPU provider has no kernels for
most operators in those types ("Could not find an implementation for Mul(14)"), so the graph is
float32 from the model's own weights, upcast exactly, and the report says so. The caller's model
keeps its dtype. The main job on a bf16 Hugging Face folder finishes and saves in bf16."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import shrink
from shrink.app.cli import main


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_a_low_precision_model_exports_a_float32_graph_with_parity(dtype, tmp_path):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.LayerNorm(16), nn.Linear(16, 3)).to(dtype).eval()
    x = torch.randn(2, 8).to(dtype)
    report = shrink.export_onnx(net, x, tmp_path / "m.onnx")
    assert any("float32 graph" in n for n in report.notes)
    assert next(net.parameters()).dtype == dtype  # the caller's model is not upcast
    import onnxruntime as ort

    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.float().numpy()})[0]
    torch.testing.assert_close(torch.from_numpy(got), net.float()(x.float()).detach(), rtol=1e-4, atol=1e-5)


def test_the_main_job_on_a_bf16_hugging_face_folder_finishes_in_bf16(tmp_path):
    T = pytest.importorskip("transformers")
    config = T.LlamaConfig(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    T.LlamaForCausalLM(config).to(torch.bfloat16).save_pretrained(tmp_path / "in")
    assert main(["compress", "--hf", str(tmp_path / "in"), "--ratio", "0.5", "--out", str(tmp_path / "out")]) == 0
    small = T.AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    assert next(small.parameters()).dtype == torch.bfloat16 and small.config.hidden_size < 32
    assert "float32 graph" in (tmp_path / "out" / "report.md").read_text()
    notes = json.loads((tmp_path / "out" / "report.json").read_text())["export"]["notes"]
    assert any("bfloat16" in n for n in notes)

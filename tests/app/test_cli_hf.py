"""`shrink compress --hf PATH`: the output folder is itself a loadable Hugging Face model folder."""

from __future__ import annotations

import json

import pytest
import torch

from shrink.app.cli import main

transformers = pytest.importorskip("transformers")


@pytest.fixture()
def gpt2_folder(tmp_path):
    from hf_models import gpt2

    src = tmp_path / "tiny-gpt2"
    gpt2().save_pretrained(src)
    (src / "vocab.json").write_text("{}")
    (src / "merges.txt").write_text("#version: 0.2\n")
    return src


def test_compress_hf_folder_writes_a_hf_folder_with_onnx_and_report(gpt2_folder, tmp_path, capsys):
    out = tmp_path / "small"
    assert main(["compress", "--hf", str(gpt2_folder), "--out", str(out), "--ratio", "0.5"]) == 0
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "plan.json", "model.onnx", "report.md", "vocab.json",
            "merges.txt"} <= names
    small = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    big = transformers.AutoModelForCausalLM.from_pretrained(gpt2_folder).eval()
    assert small.config.n_embd == 16 and sum(p.numel() for p in small.parameters()) < sum(
        p.numel() for p in big.parameters())
    x = torch.randint(0, 100, (1, 16))
    with torch.no_grad():
        assert small(x).logits.shape == big(x).logits.shape
    report = json.loads((out / "report.json").read_text())
    assert report["export"]["max_rel_diff"] <= 1e-4


def test_hf_flag_refuses_a_folder_without_config(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["compress", "--hf", str(tmp_path / "empty"), "--out", str(tmp_path / "o")]) == 2
    assert "config.json" in capsys.readouterr().err

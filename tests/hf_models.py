"""Small Hugging Face models built from configs (no download), and inputs for them."""

from __future__ import annotations

import torch

transformers = __import__("pytest").importorskip("transformers")


def _eager(config):
    config._attn_implementation = "eager"
    config.use_cache = False  # a KV cache concatenates past and present keys: not part of the graph to cut
    return config


def bert():
    cfg = transformers.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=64, max_position_embeddings=32)
    return transformers.BertModel(_eager(cfg)).eval()


def gpt2():
    cfg = transformers.GPT2Config(vocab_size=100, n_embd=32, n_layer=2, n_head=4, n_positions=32)
    return transformers.GPT2LMHeadModel(_eager(cfg)).eval()


def llama():
    cfg = transformers.LlamaConfig(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                   num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=32)
    return transformers.LlamaForCausalLM(_eager(cfg)).eval()


def vit():
    cfg = transformers.ViTConfig(image_size=16, patch_size=4, num_channels=3, hidden_size=32, num_hidden_layers=2,
                                 num_attention_heads=4, intermediate_size=64, num_labels=5)
    return transformers.ViTForImageClassification(_eager(cfg)).eval()


def token_inputs(batch=2, seq=8):
    return {"input_ids": torch.randint(0, 100, (batch, seq), generator=torch.Generator().manual_seed(0))}


HF_MODELS = {
    "bert": (bert, token_inputs),
    "gpt2": (gpt2, token_inputs),
    "llama": (llama, token_inputs),
    "vit": (vit, lambda: {"pixel_values": torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))}),
}

"""Small Hugging Face models built from configs at default settings (sdpa attention, KV cache on).

No download: every model is built from a tiny config. ``HF_MODELS`` are the four the head-cut
tests use; ``FAMILIES`` covers one model per family the Hugging Face round trip is tested on.
"""

from __future__ import annotations

import torch

transformers = __import__("pytest").importorskip("transformers")
T = transformers
_V = dict(vocab_size=100)


def _g(seed=0):
    return torch.Generator().manual_seed(seed)


def token_inputs(batch=1, seq=8):
    return {"input_ids": torch.randint(0, 100, (batch, seq), generator=_g())}


def seq2seq_inputs(batch=1, seq=8):
    return {**token_inputs(batch, seq), "decoder_input_ids": torch.randint(0, 100, (batch, 4), generator=_g(1))}


def image_inputs(batch=1, size=32):
    return {"pixel_values": torch.randn(batch, 3, size, size, generator=_g())}


def whisper_inputs(batch=1):
    return {"input_features": torch.randn(batch, 8, 32, generator=_g()),
            "decoder_input_ids": torch.tensor([[1, 5, 6, 7]] * batch)}


def bert():
    return T.BertModel(T.BertConfig(**_V, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                    intermediate_size=64, max_position_embeddings=64)).eval()


def gpt2():
    return T.GPT2LMHeadModel(T.GPT2Config(**_V, n_embd=32, n_layer=2, n_head=4, n_positions=64,
                                          bos_token_id=0, eos_token_id=0)).eval()


def llama():
    return T.LlamaForCausalLM(T.LlamaConfig(**_V, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                            num_attention_heads=8, num_key_value_heads=2,
                                            max_position_embeddings=64)).eval()


def vit():
    return T.ViTForImageClassification(T.ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2,
                                                   num_attention_heads=4, intermediate_size=64, num_labels=5)).eval()


HF_MODELS = {
    "bert": (bert, token_inputs),
    "gpt2": (gpt2, token_inputs),
    "llama": (llama, token_inputs),
    "vit": (vit, image_inputs),
}

FAMILIES = {
    **HF_MODELS,
    "roberta": (lambda: T.RobertaModel(T.RobertaConfig(**_V, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                                       intermediate_size=64, max_position_embeddings=64)), token_inputs),
    "distilbert": (lambda: T.DistilBertModel(T.DistilBertConfig(**_V, dim=32, n_layers=2, n_heads=4, hidden_dim=64,
                                                                max_position_embeddings=64)), token_inputs),
    "gpt_neox": (lambda: T.GPTNeoXForCausalLM(T.GPTNeoXConfig(**_V, hidden_size=32, num_hidden_layers=2,
                                                              num_attention_heads=4, intermediate_size=64,
                                                              max_position_embeddings=64)), token_inputs),
    "opt": (lambda: T.OPTForCausalLM(T.OPTConfig(**_V, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                                 ffn_dim=64, max_position_embeddings=64, word_embed_proj_dim=32)),
            token_inputs),
    "mistral": (lambda: T.MistralForCausalLM(T.MistralConfig(**_V, hidden_size=32, intermediate_size=64,
                                                             num_hidden_layers=2, num_attention_heads=8,
                                                             num_key_value_heads=2, max_position_embeddings=64)),
                token_inputs),
    "qwen2": (lambda: T.Qwen2ForCausalLM(T.Qwen2Config(**_V, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                                       num_attention_heads=8, num_key_value_heads=2,
                                                       max_position_embeddings=64)), token_inputs),
    "mixtral": (lambda: T.MixtralForCausalLM(T.MixtralConfig(**_V, hidden_size=32, intermediate_size=64,
                                                             num_hidden_layers=2, num_attention_heads=8,
                                                             num_key_value_heads=2, num_local_experts=4,
                                                             num_experts_per_tok=2, max_position_embeddings=64)),
                token_inputs),
    "falcon": (lambda: T.FalconForCausalLM(T.FalconConfig(**_V, hidden_size=32, num_hidden_layers=2,
                                                          num_attention_heads=4, multi_query=True,
                                                          new_decoder_architecture=False)), token_inputs),
    "phi": (lambda: T.PhiForCausalLM(T.PhiConfig(**_V, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                                 num_attention_heads=4, partial_rotary_factor=0.5,
                                                 max_position_embeddings=64)), token_inputs),
    "phi3": (lambda: T.Phi3ForCausalLM(T.Phi3Config(**_V, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                                    num_attention_heads=8, num_key_value_heads=2,
                                                    max_position_embeddings=64, pad_token_id=0, eos_token_id=1,
                                                    bos_token_id=1)), token_inputs),
    "bloom": (lambda: T.BloomForCausalLM(T.BloomConfig(**_V, hidden_size=32, n_layer=2, n_head=4)), token_inputs),
    "t5": (lambda: T.T5ForConditionalGeneration(T.T5Config(**_V, d_model=32, d_kv=8, d_ff=64, num_layers=2,
                                                           num_heads=4, decoder_start_token_id=0)), seq2seq_inputs),
    "bart": (lambda: T.BartForConditionalGeneration(T.BartConfig(**_V, d_model=32, encoder_layers=2, decoder_layers=2,
                                                                 encoder_attention_heads=4, decoder_attention_heads=4,
                                                                 encoder_ffn_dim=64, decoder_ffn_dim=64,
                                                                 max_position_embeddings=64)), seq2seq_inputs),
    "swin": (lambda: T.SwinForImageClassification(T.SwinConfig(image_size=32, patch_size=4, embed_dim=16, depths=[1, 1],
                                                                num_heads=[2, 4], window_size=4, num_labels=5)),
             image_inputs),
    "whisper": (lambda: T.WhisperForConditionalGeneration(T.WhisperConfig(
        **_V, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4,
        encoder_ffn_dim=64, decoder_ffn_dim=64, num_mel_bins=8, max_source_positions=16, max_target_positions=32,
        decoder_start_token_id=1, pad_token_id=0, bos_token_id=1, eos_token_id=2, suppress_tokens=[],
        begin_suppress_tokens=[])), whisper_inputs),
}
# Kept whole where the config cannot describe a cut: Swin's stage widths and heads (its FFN is cut,
# stated by mlp_ratio), Mixtral's router and the hidden width it reads (experts' FFNs and heads are cut).
# BLOOM keeps its head count (the ALiBi slopes follow it) and loses head dims with the hidden width;
# its FFN follows at 4 x hidden.

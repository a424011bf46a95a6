"""Speech encoders (wav2vec2 and its kin): the hidden width is read by a grouped positional conv,
so a uniform count is in units of one channel per conv group; the classifier's projector width
is a config field of its own (classifier_proj_size). Both used to stay whole (0.87x of the
parameters); now the model is cut, saved and reloaded identical, with its task head's outputs."""

from __future__ import annotations

import pytest
import torch

import shrink
from hf_models import transformers as T


def _config():
    return T.Wav2Vec2Config(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                            conv_dim=(16, 16), conv_stride=(5, 2), conv_kernel=(10, 3), num_conv_pos_embeddings=16,
                            num_conv_pos_embedding_groups=4, num_labels=3, vocab_size=12)


HEADS = {"classification": T.Wav2Vec2ForSequenceClassification, "ctc": T.Wav2Vec2ForCTC}


@pytest.mark.parametrize("head", sorted(HEADS))
def test_wav2vec2_heads_compress_and_reload_identical(head, tmp_path):
    torch.manual_seed(0)
    model = HEADS[head](_config()).eval()
    x = {"input_values": torch.randn(2, 400, generator=torch.Generator().manual_seed(1))}
    result = shrink.compress(model, x, ratio=0.5)
    assert result.after.params < 0.5 * result.before.params, result.kept_whole
    hidden = result.model.config.hidden_size
    conv = result.model.wav2vec2.encoder.pos_conv_embed.conv
    assert conv.out_channels == hidden < 64 and conv.groups == 4  # each conv group lost the same channels
    loaded = type(model).from_pretrained(shrink.save_pretrained(result, tmp_path / "o")).eval()
    with torch.no_grad():
        want, got, dense = result.model(**x).logits, loaded(**x).logits, model(**x).logits
    assert want.shape == dense.shape
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)

"""export_onnx finds the batch axis of sequence-first models itself (batch_dim=None, the default)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

import shrink
from models import ConvBN, randomize_bn
from shrink.deploy import batch_axis


def _run_ort(path, feeds):
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {i.name: feeds[i.name] for i in session.get_inputs()})


class WordLanguageModel(nn.Module):
    """pytorch/examples word_language_model: tokens (seq, batch) -> Embedding -> LSTM -> Linear."""

    def __init__(self, vocab=50, width=16):
        super().__init__()
        self.encoder = nn.Embedding(vocab, width)
        self.rnn = nn.LSTM(width, width, 2)
        self.decoder = nn.Linear(width, vocab)

    def forward(self, tokens):
        out, _ = self.rnn(self.encoder(tokens))
        return self.decoder(out)


def _encoder():
    layer = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0)  # batch_first=False: (seq, batch, features)
    return nn.TransformerEncoder(layer, 2, enable_nested_tensor=False).eval()


def test_sequence_first_transformer_from_a_batch_one_example_accepts_batch_four(tmp_path):
    torch.manual_seed(0)
    model = _encoder()
    rep = shrink.export_onnx(model, torch.randn(6, 1, 16), tmp_path / "m.onnx")
    assert any("batch on dimension 1" in n for n in rep.notes), rep.notes
    x4 = torch.randn(6, 4, 16)
    (got,) = _run_ort(tmp_path / "m.onnx", {rep.input_names[0]: x4.numpy()})
    with torch.no_grad():
        np.testing.assert_allclose(got, model(x4).numpy(), rtol=1e-4, atol=1e-5)


def test_word_language_model_tokens_seq_first(tmp_path):
    torch.manual_seed(0)
    model = WordLanguageModel().eval()
    tokens = torch.randint(0, 50, (7, 1))
    rep = shrink.export_onnx(model, tokens, tmp_path / "m.onnx")
    assert rep.batch_sizes == (1, 3)
    t4 = torch.randint(0, 50, (7, 4))
    (got,) = _run_ort(tmp_path / "m.onnx", {rep.input_names[0]: t4.numpy()})
    with torch.no_grad():
        np.testing.assert_allclose(got, model(t4).numpy(), rtol=1e-4, atol=1e-5)


class WordLanguageModelGRU(nn.Module):
    """The example's RNNModel as it is written there: an initial hidden state (layers, batch, hidden)
    passed in, and the decoded output flattened to (seq * batch, vocab) before log_softmax."""

    def __init__(self, vocab=50, width=16, layers=2):
        super().__init__()
        self.vocab = vocab
        self.encoder = nn.Embedding(vocab, width)
        self.rnn = nn.GRU(width, width, layers)
        self.decoder = nn.Linear(width, vocab)

    def forward(self, tokens, hidden):
        out, hidden = self.rnn(self.encoder(tokens), hidden)
        decoded = self.decoder(out).view(-1, self.vocab)
        return torch.log_softmax(decoded, dim=1), hidden


def test_gru_with_its_hidden_state_and_a_flattened_output_exports_on_dimension_one(tmp_path):
    torch.manual_seed(0)
    model = WordLanguageModelGRU().eval()
    example = (torch.randint(0, 50, (7, 2)), torch.zeros(2, 2, 16))
    assert batch_axis.find(model, example) == 1  # joined along 0, the hidden state would gain layers
    result = shrink.compress(model, example, ratio=0.5)
    rep = shrink.export_onnx(result.model, example, tmp_path / "m.onnx")
    assert rep.batch_sizes == (2, 4) and any("dimension 1" in n for n in rep.notes)
    tokens, hidden = torch.randint(0, 50, (7, 5)), torch.randn(2, 5, 16)
    got = _run_ort(tmp_path / "m.onnx", {rep.input_names[0]: tokens.numpy(), rep.input_names[1]: hidden.numpy()})
    with torch.no_grad():
        want = result.model(tokens, hidden)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w.numpy(), rtol=1e-4, atol=1e-5)


def test_batch_first_models_keep_dimension_zero_without_a_note(tmp_path):
    torch.manual_seed(0)
    model = randomize_bn(ConvBN()).eval()
    assert batch_axis.find(model, torch.randn(1, 3, 16, 16)) == 0
    rep = shrink.export_onnx(model, torch.randn(1, 3, 16, 16), tmp_path / "m.onnx")
    assert not any("dimension" in n for n in rep.notes)


class MixesTheBatch(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return self.fc(x - x.mean(dim=0, keepdim=True))


def test_no_axis_confirmed_is_said_and_the_option_named(tmp_path):
    model = MixesTheBatch().eval()
    assert batch_axis.find(model, torch.randn(2, 4)) is None
    rep = shrink.export_onnx(model, torch.randn(2, 4), tmp_path / "m.onnx")
    assert any("could not confirm the batch axis" in n and "batch_dim=" in n for n in rep.notes), rep.notes


def test_an_explicit_batch_dim_is_taken_as_given(tmp_path):
    torch.manual_seed(0)
    rep = shrink.export_onnx(nn.LSTM(4, 8).eval(), torch.randn(5, 2, 4), tmp_path / "m.onnx", batch_dim=0)
    assert rep.batch_sizes == (5, 7) and not any("dimension" in n for n in rep.notes)

"""Dead ends: layers computed in the forward whose outputs reach no model output (cut/dead.py).

They are not in torch-pruning's graph (it walks back from the outputs), so nothing cut their input
columns: the cut model failed inside them and healing kept the width they read whole. SigLIP's
image classifier, whose vision tower runs an attention-pooling head the classifier never reads,
lost 0% of its parameters; BasicUNet++ without deep supervision kept its first-level widths.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import shrink
from shrink.cut import dead, graph


class DeadSideHead(nn.Module):
    """A residual conv trunk with a side head that is computed and dropped (BasicUNet++'s
    ``final_conv_0_1`` without deep supervision): the side conv reads the trunk's width."""

    def __init__(self, c: int = 16, classes: int = 4) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, c, 3, padding=1)
        self.body = nn.Conv2d(c, c, 3, padding=1)
        self.side = nn.Conv2d(c, classes, 1)
        self.out = nn.Conv2d(c, classes, 1)

    def forward(self, x):
        h = F.relu(self.stem(x))
        side = self.side(h)  # noqa: F841 - computed, never returned
        h = F.relu(self.body(h)) + h
        return self.out(h)


class DeadPoolingHead(nn.Module):
    """Token blocks with a MultiheadAttention pooling head over a learned probe that nothing
    reads (SigLIP's ``vision_model.head``); the output mean-pools the tokens."""

    def __init__(self, d: int = 32, heads: int = 4, classes: int = 3) -> None:
        super().__init__()
        self.embed = nn.Linear(8, d)
        self.fc1, self.fc2 = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)
        self.probe = nn.Parameter(torch.randn(1, 1, d))
        self.pool = nn.MultiheadAttention(d, heads, batch_first=True)
        self.pool_mlp = nn.Linear(d, d)
        self.classifier = nn.Linear(d, classes)

    def forward(self, x):
        h = self.embed(x)
        h = h + self.fc2(F.gelu(self.fc1(h)))
        pooled = self.pool(self.probe.repeat(h.shape[0], 1, 1), h, h)[0]
        pooled = pooled + self.pool_mlp(pooled)  # noqa: F841 - the dead head's output
        return self.classifier(h.mean(1))


CASES = {"side_head": (DeadSideHead, (2, 3, 8, 8)), "pooling_head": (DeadPoolingHead, (2, 5, 8))}


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_dead_branch_never_keeps_the_width_it_reads_whole(name, tmp_path):
    factory, shape = CASES[name]
    torch.manual_seed(0)
    model, x = factory().eval(), torch.randn(shape)
    result = shrink.compress(model, x)  # defaults; compress checks that the cut equals masking
    assert result.after.params <= 2 / 3 * result.before.params, result.kept_whole
    with torch.no_grad():
        want, dense = result.model(x), model(x)
    assert want.shape == dense.shape  # outputs are never narrowed
    loaded = shrink.load(shrink.save(result, tmp_path / "o"), factory()).eval()
    with torch.no_grad():
        assert torch.equal(loaded(x), want)


def test_the_dead_layer_loses_the_columns_its_producer_loses():
    torch.manual_seed(0)
    result = shrink.compress(DeadSideHead().eval(), torch.randn(2, 3, 8, 8))
    model = result.model
    assert model.stem.out_channels == 8
    assert model.side.in_channels == model.body.in_channels == model.stem.out_channels


def test_the_dead_branch_is_traced_and_protects_nothing():
    traced = graph.trace(DeadSideHead().eval(), torch.randn(1, 3, 8, 8))
    trunk = next(g for g in traced.groups if g.has("stem", "out"))
    assert trunk.has("side", "in") and trunk.protected is None
    assert "side" not in traced.kept  # it was "not traced: ... unused on the example inputs"
    assert traced.kept == {"out": "model output"}


def test_a_model_without_dead_ends_traces_as_before():
    class Live(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, 8), nn.Linear(8, 2)

        def forward(self, x):
            return self.b(torch.relu(self.a(x)))

    traced = graph.trace(Live().eval(), torch.randn(2, 4))
    assert sorted(g.root_name for g in traced.groups) == ["a", "b"]
    assert traced.kept == {"b": "model output"}


def test_a_slice_written_in_place_is_no_dead_end(monkeypatch):
    """torchvision's Swin V2 zeroes the key third of a cloned qkv bias in place, then reads the whole
    bias: the written slice is never read again, but its write is (through its base). Taken for a
    dead end, it was handed to torch-pruning as an output, whose cut then failed."""
    class ZeroedSlice(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed, self.mid, self.head = nn.Linear(4, 16), nn.Linear(16, 24), nn.Linear(24, 2)

        def forward(self, x):
            h = self.mid(torch.relu(self.embed(x))).clone()
            h[:, 8:16].zero_()
            return self.head(torch.relu(h))

    ends, real = [], dead.sinks
    monkeypatch.setattr(dead, "sinks", lambda unread, outputs: ends.extend(real(unread, outputs)) or ends)
    graph.trace(ZeroedSlice().eval(), torch.randn(2, 4))
    assert ends == []
    result = shrink.compress(ZeroedSlice().eval(), torch.randn(2, 4))
    assert "embed" not in result.kept_whole and result.model.embed.out_features == 8


def test_siglip_classifier_cuts_past_its_unread_pooling_head(tmp_path):
    T = pytest.importorskip("transformers")
    vision = dict(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                  intermediate_size=64)
    text = dict(vocab_size=100, hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64)
    config = T.SiglipConfig(vision_config=vision, text_config=text, num_labels=3)
    torch.manual_seed(0)
    model = T.SiglipForImageClassification(config).eval()
    x = {"pixel_values": torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))}
    assert model.vision_model.use_head  # the head runs in every forward; the classifier mean-pools instead
    result = shrink.compress(model, x)
    assert result.after.params < 0.8 * result.before.params, result.kept_whole
    loaded = type(model).from_pretrained(shrink.save_pretrained(result, tmp_path / "o")).eval()
    with torch.no_grad():
        want, got, dense = result.model(**x).logits, loaded(**x).logits, model(**x).logits
    assert want.shape == dense.shape
    torch.testing.assert_close(got, want, rtol=0, atol=0)

"""compress without a second copy: cut-away weights are let go as they are replaced, inplace=True keeps
the model as it was on disk (not in memory) to retry from, and a bf16 model stays bf16 through the check."""

from __future__ import annotations

import os
import tempfile

import pytest
import torch
from torch import nn

import shrink
from shrink._util.clone import Spill
from models import MisTraced, TinyMLP, randomize_bn
from oracle import assert_matches_oracle


def _spills() -> set[str]:
    return {f for f in os.listdir(tempfile.gettempdir()) if f.startswith("shrink-pristine-")}


def _in_spill_file(address: int) -> bool:
    """Whether ``address`` lies in a memory map of a (deleted) spill file: /proc/self/maps."""
    for line in open("/proc/self/maps"):
        if "shrink-pristine-" in line:
            lo, hi = (int(a, 16) for a in line.split()[0].split("-"))
            if lo <= address < hi:
                return True
    return False


def test_cut_away_weights_hold_no_memory_after_compress(monkeypatch):
    """The traced graph holds every parameter it saw; without release each old weight would stay in RAM."""
    import shrink.cut.compress as compress_module

    originals: list[nn.Parameter] = []
    clone = compress_module.clone

    def recording_clone(model):
        twin = clone(model)
        originals.extend(twin.parameters())
        return twin

    monkeypatch.setattr(compress_module, "clone", recording_clone)
    torch.manual_seed(0)
    model = TinyMLP((16, 64, 64, 4)).eval()
    result = shrink.compress(model, torch.randn(2, 16), ratio=0.5)
    assert all(p.numel() for p in model.parameters())  # the default leaves the caller's model alone
    kept = {id(p) for p in result.model.parameters()}
    replaced = [p for p in originals if id(p) not in kept]
    assert replaced, "nothing was cut"
    assert not [p for p in replaced if p.numel()], "cut-away weights of the copy still hold their values"


def test_inplace_releases_each_replaced_weight_to_disk_and_an_undo_reads_it_back(monkeypatch):
    import shrink.cut.compress as compress_module

    torch.manual_seed(0)
    model = TinyMLP((16, 64, 64, 4)).eval()
    params = dict(model.named_parameters())
    values = {k: v.detach().clone() for k, v in params.items()}

    def fail(*args, **kwargs):
        raise RuntimeError("simulated failure after the cut")

    monkeypatch.setattr(compress_module, "check_outputs", fail)
    with pytest.raises(RuntimeError, match="simulated"):
        shrink.compress(model, torch.randn(2, 16), ratio=0.5, inplace=True)
    for name, p in model.named_parameters():  # the very objects, with their values, read back from the spill
        assert p is params[name] and torch.equal(p, values[name]), name
    assert not _spills()


@pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="reads Linux's /proc/self/maps")
def test_inplace_success_leaves_replaced_parameter_objects_reading_from_disk():
    torch.manual_seed(0)
    model = TinyMLP((16, 64, 64, 4)).eval()
    first = model.net[0].weight
    value = first.detach().clone()
    result = shrink.compress(model, torch.randn(2, 16), ratio=0.5, inplace=True)
    assert result.model is model and model.net[0].weight is not first
    # Still alive only because this test holds it: its values are read from the spill file, not held in RAM.
    assert _in_spill_file(first.data_ptr()) and torch.equal(first, value)
    assert not _spills()


def test_inplace_healing_retries_from_the_spilled_model_and_matches_the_default():
    def build():
        torch.manual_seed(0)
        model = MisTraced().eval()
        randomize_bn(model)
        return model

    x = torch.randn(2, 3, 8, 8)
    default = shrink.compress(build(), x, ratio=0.5)
    model = build()
    inplace = shrink.compress(model, x, ratio=0.5, inplace=True)
    assert inplace.plan.checks["trials"] > 1  # healing needed fresh copies
    assert inplace.model is model and inplace.kept_whole == default.kept_whole
    assert inplace.plan.kept == default.plan.kept
    for (name, a), (_, b) in zip(inplace.model.state_dict().items(), default.model.state_dict().items()):
        assert torch.equal(a, b), name
    assert_matches_oracle(build(), inplace, x)
    assert not _spills()


def test_a_spill_gives_copies_with_shared_tensors_still_shared_and_masks_recomputed():
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(10, 4)
            self.head = nn.Linear(4, 10, bias=False)
            self.head.weight = self.embed.weight
            self.register_buffer("scale", torch.tensor(2.0))

        def forward(self, ids):
            return self.head(self.embed(ids) * self.scale)

    model = Tied()
    torch.nn.utils.prune.l1_unstructured(model.embed, "weight", amount=0.5)
    ids = torch.tensor([[1, 2, 3]])
    expected = model(ids)
    spill = Spill(model)
    try:
        twin = spill.fresh()
        assert torch.equal(twin(ids), expected)
        assert twin.head.weight is not model.head.weight
        assert twin.embed.weight_orig is twin.head.weight  # the tie survives
        with torch.no_grad():
            twin.embed.weight_orig.add_(1.0)  # copy-on-write: the original and the file are untouched
        assert torch.equal(model(ids), expected) and torch.equal(spill.fresh()(ids), expected)
    finally:
        spill.close()
    assert not os.path.exists(spill.path)


def test_a_bf16_language_model_is_cut_in_bf16_and_passes_its_masking_check():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=100, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                      num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=64)
    model = transformers.LlamaForCausalLM(config).to(torch.bfloat16).eval()
    ids = torch.randint(0, 100, (1, 8))
    result = shrink.compress(model, ids, ratio=0.5, inplace=True)
    assert {p.dtype for p in result.model.parameters()} == {torch.bfloat16}
    assert result.after.params < 0.6 * result.before.params
    differs = {k: v for k, v in result.kept_whole.items() if "differs" in v}
    assert not differs  # half-precision rounding is not mistaken for a mis-traced cut


def test_the_masking_check_tolerates_half_precision_rounding_and_nothing_more():
    from shrink.cut import verify

    ref = torch.linspace(-4, 4, 64).to(torch.bfloat16)
    ulp = (ref.view(torch.int16) + 1).view(torch.bfloat16)  # one bf16 step further from zero
    off = (ref.float() * 1.1).to(torch.bfloat16)
    bf16_model = nn.Linear(2, 2).to(torch.bfloat16)
    rtol = verify.tolerance(bf16_model)
    assert verify.compare({"y": ref}, {"y": ulp}, rtol) is None
    assert verify.compare({"y": ref}, {"y": ulp}, verify.tolerance(nn.Linear(2, 2))) is not None  # fp32: too far
    assert verify.compare({"y": ref}, {"y": off}, rtol) is not None

"""save/load given wrong objects, damaged files and foreign plans: one PlanMismatchError naming the file."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import shrink
from models import TOKENS, Attention, TinyMLP

X = torch.randn(2, 2)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    folder = tmp_path_factory.mktemp("store") / "good"
    shrink.save(shrink.compress(TinyMLP(), X), folder)
    return folder


def _copy(saved, tmp_path, plan: bytes | None = None, weights: bytes | None = None):
    folder = tmp_path / "copy"
    shutil.copytree(saved, folder)
    if plan is not None:
        (folder / "plan.json").write_bytes(plan)
    if weights is not None:
        (folder / "model.safetensors").write_bytes(weights)
    return folder


def _plan(saved, **change) -> bytes:
    doc = json.loads((saved / "plan.json").read_text())
    doc.update(change)
    return json.dumps(doc).encode()


def test_save_of_a_module_asks_for_the_result(tmp_path):
    with pytest.raises(shrink.ShrinkTypeError, match=r"save takes a shrink Result; got TinyMLP.*not `result.model`"):
        shrink.save(TinyMLP(), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_save_under_a_regular_file_is_refused_and_the_file_kept(tmp_path):
    (tmp_path / "notes").write_text("mine")
    with pytest.raises(shrink.ShrinkValueError, match="'.*notes' is a file, not a folder"):
        shrink.save(shrink.compress(TinyMLP(), X), tmp_path / "notes" / "out")
    assert (tmp_path / "notes").read_text() == "mine"


def test_save_over_a_file_with_overwrite_refuses_to_delete_it(tmp_path):
    (tmp_path / "out").write_text("mine")
    with pytest.raises(shrink.ShrinkValueError, match="is a file, not a folder; replacing it would delete it"):
        shrink.save(shrink.compress(TinyMLP(), X), tmp_path / "out", overwrite=True)
    assert (tmp_path / "out").read_text() == "mine"


@pytest.mark.parametrize("plan, match", [
    (b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe", "is not text"),
    (b"[1, 2, 3]", "holds a JSON list, not a plan object"),
    (b'{"format": 1}', "a plan needs 'steps'"),
    (b'{"format": 1, "steps": [1]}', "a plan step must be a JSON object"),
    (b'{"format": 1, "steps": [{"op": "group"}]}', r"lacks the keys \['dim', 'layer', 'removed'\]"),
    (b'{"format": 1, "steps": [], "inputs": "x"}', "'inputs' must be a JSON object"),
    (b'{"format": 1, "steps": [], "inputs": {"args": [{"shape": [100000, 100000], "dtype": "float32"}]}}',
     "more than 100,000,000"),
    (b'{"format": 1, "steps": [], "inputs": {"args": [{"shape": [1], "dtype": "manual_seed"}]}}',
     "a recorded input must be"),
])
def test_damaged_plan_json(saved, tmp_path, plan, match):
    with pytest.raises(shrink.PlanMismatchError, match=match):
        shrink.load(_copy(saved, tmp_path, plan=plan), TinyMLP())


def test_truncated_plan_json_says_how_to_fix_it(saved, tmp_path):
    plan = (saved / "plan.json").read_bytes()
    with pytest.raises(shrink.PlanMismatchError, match="not valid JSON.*damaged or cut short; write the folder again"):
        shrink.load(_copy(saved, tmp_path, plan=plan[: len(plan) // 2]), TinyMLP())


@pytest.mark.parametrize("removed", [["a"], [-1], [1.5], [True], "0,1", [0, 0]])
def test_kept_indices_must_be_non_negative_integers(saved, tmp_path, removed):
    doc = json.loads((saved / "plan.json").read_text())
    doc["steps"][0]["removed"] = removed
    with pytest.raises(shrink.PlanMismatchError, match="plan.json' is not a plan shrink can replay: step group"):
        shrink.load(_copy(saved, tmp_path, plan=json.dumps(doc).encode()), TinyMLP())


@pytest.mark.parametrize("weights", [b"", b"\x00" * 8, b"garbage that is no safetensors header at all"])
def test_unreadable_weights_name_the_file(saved, tmp_path, weights):
    with pytest.raises(shrink.PlanMismatchError, match=r"model.safetensors' is not a readable safetensors file"):
        shrink.load(_copy(saved, tmp_path, weights=weights), TinyMLP())


def test_truncated_weights_leave_an_inplace_base_model_uncut(saved, tmp_path):
    weights = (saved / "model.safetensors").read_bytes()
    base = TinyMLP()
    shapes = {k: v.shape for k, v in base.state_dict().items()}
    with pytest.raises(shrink.PlanMismatchError, match="model.safetensors"):
        shrink.load(_copy(saved, tmp_path, weights=weights[:-7]), base, inplace=True)
    assert {k: v.shape for k, v in base.state_dict().items()} == shapes


def _as_old_plan(folder) -> None:
    """The folder as shrink wrote it before plans recorded the layout: load replays the steps."""
    doc = json.loads((folder / "plan.json").read_text())
    doc.pop("layout")
    (folder / "plan.json").write_text(json.dumps(doc))


def test_a_plan_of_another_configuration_is_a_plan_mismatch(tmp_path):
    x = torch.randn(*TOKENS)
    shrink.save(shrink.compress(Attention(num_heads=4), x), tmp_path / "heads4")
    with pytest.raises(shrink.PlanMismatchError, match=r"'num_heads' is 2; the plan was made from a model "
                                                       r"where it is 4\. Load the folder onto an instance"):
        shrink.load(tmp_path / "heads4", Attention(num_heads=2))
    _as_old_plan(tmp_path / "heads4")
    with pytest.raises(shrink.PlanMismatchError, match=r"which has 2 here"):
        shrink.load(tmp_path / "heads4", Attention(num_heads=2))


def test_head_index_out_of_range_is_blamed_on_the_plan(tmp_path):
    x = torch.randn(*TOKENS)
    shrink.save(shrink.compress(Attention(), x), tmp_path / "a")
    _as_old_plan(tmp_path / "a")
    doc = json.loads((tmp_path / "a" / "plan.json").read_text())
    for step in doc["steps"]:
        if step["op"] == "heads":
            step["removed"] = [99]
    (tmp_path / "a" / "plan.json").write_text(json.dumps(doc))
    with pytest.raises(shrink.PlanMismatchError, match=r"removes heads \[99\]"):
        shrink.load(tmp_path / "a", Attention())


def test_unknown_step_dimension_is_refused(saved, tmp_path):
    doc = json.loads((saved / "plan.json").read_text())
    doc["steps"][0]["dim"] = "sideways"
    with pytest.raises(shrink.PlanMismatchError, match="dim must be one of"):
        shrink.load(_copy(saved, tmp_path, plan=json.dumps(doc).encode()), TinyMLP())


def test_load_of_a_file_or_a_missing_folder(tmp_path):
    (tmp_path / "f").write_text("x")
    for folder in (tmp_path / "f", tmp_path / "missing"):
        with pytest.raises(shrink.ShrinkValueError, match="is not a folder; pass a folder written by shrink.save"):
            shrink.load(folder, TinyMLP())
    with pytest.raises(shrink.ShrinkTypeError, match="folder must be a path"):
        shrink.load(42, TinyMLP())


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 40) | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(
        st.sampled_from(["format", "steps", "op", "layer", "dim", "removed", "inputs", "args", "shape", "dtype",
                         "kept", "round", "partner", "weights_sha256"]), children, max_size=6),
    max_leaves=20,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_garbage_plan_or_weights_always_give_a_shrink_error(saved, tmp_path_factory, data):
    """Random bytes, random JSON, or a real plan with one field replaced: never a raw exception."""
    tmp = tmp_path_factory.mktemp("garbage")
    kind = data.draw(st.sampled_from(["plan bytes", "plan json", "plan field", "weights bytes", "weights cut"]))
    if kind == "plan bytes":
        folder = _copy(saved, tmp, plan=data.draw(st.binary(max_size=200)))
    elif kind == "plan json":
        folder = _copy(saved, tmp, plan=json.dumps(data.draw(_JSON)).encode())
    elif kind == "plan field":
        doc = json.loads((saved / "plan.json").read_text())
        step = data.draw(st.sampled_from(["top", "step"]))
        target = doc if step == "top" else doc["steps"][0]
        key = data.draw(st.sampled_from(sorted(target)))
        target[key] = data.draw(_JSON)
        folder = _copy(saved, tmp, plan=json.dumps(doc).encode())
    elif kind == "weights bytes":
        folder = _copy(saved, tmp, weights=data.draw(st.binary(max_size=300)))
    else:
        weights = (saved / "model.safetensors").read_bytes()
        folder = _copy(saved, tmp, weights=weights[: data.draw(st.integers(0, len(weights) - 1))])
    if kind in ("plan bytes", "weights bytes", "weights cut"):  # never loadable
        with pytest.raises(shrink.ShrinkError):
            shrink.load(folder, TinyMLP())
        return
    try:  # a replaced field may still be a valid plan; any failure must be a ShrinkError
        shrink.load(folder, TinyMLP())
    except shrink.ShrinkError:
        pass


def test_a_huge_plan_json_is_refused_without_reading_it(saved, tmp_path, monkeypatch):
    import shrink.deploy.store as store

    monkeypatch.setattr(store, "MAX_PLAN_BYTES", 100)
    with pytest.raises(shrink.PlanMismatchError, match="more than any plan shrink writes"):
        shrink.load(_copy(saved, tmp_path), TinyMLP())

"""A module traced as a black box may return a Hugging Face ModelOutput (a whole LlamaModel, boxed when
its forward outlasts the tracing budget on a slow machine): the trace goes on around it."""

from __future__ import annotations

from hf_models import llama, token_inputs
from shrink.cut import graph


def test_a_boxed_module_returning_a_model_output_traces():
    model = llama()
    traced = graph.trace(model, token_inputs(), black_boxes={"model": "outlasted the budget"})
    assert traced.opaque == {"model": "outlasted the budget"}
    assert traced.groups  # the LM head's own group, around the box
    assert all("inside 'model'" in why for name, why in traced.kept.items() if name.startswith("model."))

"""Every registered model keeps the model contract (jaxdl.models.contract)."""

import dataclasses
import inspect

import pytest

from jaxdl.models import MODELS
from jaxdl.models.rnn import RNNLM
from jaxdl.models.transformer import Transformer
from jaxdl.settings import RUNTIME_FIELDS


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_takes_train_and_example_keys_and_has_an_axis_name(name):
    cls = MODELS[name]
    fields = {f.name: f for f in dataclasses.fields(cls)}
    assert "axis_name" in fields and fields["axis_name"].default is None and "axis_name" in RUNTIME_FIELDS
    parameters = inspect.signature(cls.__call__).parameters
    for keyword in ("train", "example_keys"):
        assert parameters[keyword].kind is inspect.Parameter.KEYWORD_ONLY, (name, keyword)
    assert parameters["example_keys"].default is None


def test_token_models_state_their_context_and_cache():
    assert Transformer(max_len=32).context_length == 32 and Transformer().cached().decode
    assert RNNLM().context_length is None and RNNLM().cached() is None

"""Every model refuses a zero width when it is built, naming the setting, before Flax divides by it."""

import pytest

from jaxdl.errors import SettingsError
from jaxdl.models import MODELS


@pytest.mark.parametrize(
    "name, settings, message",
    [
        ("vae", {"latent_dim": 0}, "model.latent_dim=0 cannot build a layer: it must be at least 1"),
        ("vae", {"hidden_dims": (200, 0)}, "model.hidden_dims=[200, 0] cannot build a layer: every entry"),
        ("mlp", {"hidden_dims": (0,)}, "model.hidden_dims=[0]"),
        ("autoencoder", {"code_dim": 0}, "model.code_dim=0"),
        ("cnn", {"channels": (16, 0)}, "model.channels=[16, 0]"),
        ("gan", {"latent_dim": -1}, "model.latent_dim=-1"),
        ("rbm", {"num_hidden": 0}, "model.num_hidden=0"),
        ("rnn", {"hidden_dim": 0}, "model.hidden_dim=0"),
        ("transformer", {"embed_dim": 0}, "model.embed_dim=0"),
        ("airbench94", {"widths": (64, 0, 256)}, "model.widths=[64, 0, 256]"),
    ],
)
def test_a_zero_width_names_the_setting(name, settings, message):
    with pytest.raises(SettingsError) as info:
        MODELS[name](**settings)
    assert str(info.value).startswith(message) and "\n" not in str(info.value)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_the_defaults_and_no_hidden_layers_are_accepted(name):
    MODELS[name]()
    if name in ("mlp", "vae"):
        MODELS[name](hidden_dims=())

import pytest

from nnlab.errors import NnlabError
from nnlab.registry import Registry


def test_register_and_get():
    reg = Registry("widget")

    @reg.register("round")
    def round_widget():
        return "o"

    assert reg.get("round") is round_widget
    assert reg.names() == ["round"]
    assert "round" in reg


def test_unknown_name_lists_valid_names_and_closest_match():
    reg = Registry("model")
    for name in ("mlp", "cnn", "resnet"):
        reg.register(name)(lambda: None)
    with pytest.raises(NnlabError) as err:
        reg.get("mpl")
    message = str(err.value)
    assert "Unknown model 'mpl'" in message
    assert "cnn, mlp, resnet" in message
    assert "did you mean 'mlp'?" in message


def test_no_suggestion_when_nothing_is_close():
    reg = Registry("dataset")
    reg.register("digits")(lambda: None)
    with pytest.raises(NnlabError, match=r"valid dataset names are digits\.$"):
        reg.get("zzzzzz")


def test_registering_a_different_builder_under_a_taken_name_fails():
    reg = Registry("optimizer")
    reg.register("sgd")(lambda: 1)
    with pytest.raises(ValueError, match="registered twice"):
        reg.register("sgd")(lambda: 2)


def test_the_builtin_registries_hold_the_documented_names():
    from nnlab.data import DATASETS
    from nnlab.models import MODELS
    from nnlab.training.optim import OPTIMIZERS

    assert {"digits", "fashion_mnist", "mnist"} <= set(DATASETS.names())
    assert {"mlp", "cnn"} <= set(MODELS.names())
    assert {"sgd", "adam", "rmsprop", "adamw", "nadam"} <= set(OPTIMIZERS.names())

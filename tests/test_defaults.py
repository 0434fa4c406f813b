"""Every default lives in one place, the config dataclass: builders restate none, presets hold only what differs,
the root config overrides no group silently, and the code receives typed objects."""

import dataclasses
import inspect
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

import nnlab.conf
from nnlab.config import SCHEMAS, AugmentConfig, Config, TrackingConfig, builder_kwargs
from nnlab.config.optim import AdamConfig
from nnlab.config.train import TrainerConfig

CONF = Path(nnlab.conf.__file__).parent
BUILDERS = {"dataset": ("nnlab.data", "DATASETS", {"seed"}), "model": ("nnlab.models", "MODELS", {"x"})}


def composed(*overrides: str):
    with initialize_config_module(config_module="nnlab.conf", version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def schema_default(field: dataclasses.Field):
    if field.default_factory is not dataclasses.MISSING:
        value = field.default_factory()
        return OmegaConf.to_container(OmegaConf.structured(value)) if dataclasses.is_dataclass(value) or (
            isinstance(value, list) and value and dataclasses.is_dataclass(value[0])) else value
    return "???" if field.default is dataclasses.MISSING else field.default


def restated(values: dict, schema) -> list[str]:
    """Keys of a preset whose value equals the schema's default (nested dataclasses compared leaf by leaf)."""
    fields = {f.name: f for f in dataclasses.fields(schema)}
    found = []
    for key, value in values.items():
        if key in ("defaults", "name") or key not in fields:
            continue
        default = schema_default(fields[key])
        if isinstance(value, dict) and isinstance(default, dict) and value:
            found += [f"{key}.{k}" for k, v in value.items() if default.get(k, object()) == v]
        elif value == default:
            found.append(key)
    return found


@pytest.mark.parametrize("group", ["dataset", "model"])
def test_builders_restate_no_default_of_their_schema(group):
    import importlib

    module, attr, runtime = BUILDERS[group]
    registry = getattr(importlib.import_module(module), attr)
    for name in SCHEMAS[group]:
        params = inspect.signature(registry.get(name)).parameters
        with_defaults = [p for p, v in params.items() if p not in runtime and v.default is not inspect.Parameter.empty]
        assert not with_defaults, f"{group} '{name}' restates defaults for {with_defaults}: the dataclass holds them"


def test_augmentation_layers_take_exactly_the_augment_schema_without_defaults():
    from nnlab.data.augment import augmentation_layers

    params = inspect.signature(augmentation_layers).parameters
    assert set(params) - {"seed"} == {f.name for f in dataclasses.fields(AugmentConfig)}
    assert all(p.default is inspect.Parameter.empty for p in params.values())


@pytest.mark.parametrize("group", ["dataset", "model", "optimizer", "trainer", "tracking"])
def test_presets_hold_only_values_that_differ_from_the_schema(group):
    schemas = SCHEMAS[group]
    for path in sorted((CONF / group).glob("*.yaml")):
        values = yaml.safe_load(path.read_text()) or {}
        schema = schemas.get(values.get("name", path.stem)) or schemas.get(path.stem)
        if schema is None:  # a preset of a preset (resnet50v2 extends transfer): checked against its parent
            continue
        assert restated(values, schema) == [], f"{path.name} restates the schema's default for these keys"


def test_the_default_job_gets_the_schemas_values_unchanged():
    """The root config overrides no group: what composes equals what the dataclasses say."""
    cfg = OmegaConf.to_object(composed())
    assert cfg.trainer == TrainerConfig()
    assert cfg.optimizer == AdamConfig()
    assert cfg.tracking == OmegaConf.to_object(OmegaConf.structured(TrackingConfig()))  # $MLFLOW_TRACKING_URI resolved
    assert cfg.augment == AugmentConfig()
    assert cfg.seed == Config.seed


@pytest.mark.parametrize("override, key, value", [("trainer.epochs=7", "epochs", 7),
                                                  ("trainer.early_stopping.patience=3", "early_stopping", 3)])
def test_composed_configs_become_typed_objects_with_overrides_applied(override, key, value):
    cfg = OmegaConf.to_object(composed(override, "model=cnn"))
    assert isinstance(cfg.trainer, TrainerConfig)
    got = getattr(cfg.trainer, key)
    assert (got.patience if key == "early_stopping" else got) == value
    assert type(cfg.model).__name__ == "CNNConfig" and type(cfg.model.blocks[0]).__name__ == "ConvBlockConfig"


def test_a_mapping_is_completed_from_its_schema_and_a_renamed_key_fails_loudly():
    kwargs = builder_kwargs("dataset", {"name": "faces", "path": "/x"})
    assert kwargs["cache_dir"] and kwargs["test_split"] == 0.25  # the schema's values, not a loader's
    with pytest.raises(Exception, match="test_spilt"):
        builder_kwargs("dataset", {"name": "faces", "path": "/x", "test_spilt": 0.3})


def test_the_course_loader_caches_decoded_images(tmp_path, monkeypatch):
    """The default cache folder reaches loaders called from Python too (it used to be None there)."""
    from data_fixtures import make_faces

    from nnlab import course

    monkeypatch.setenv("NNLAB_CACHE_DIR", str(tmp_path / "cache"))
    root = make_faces(tmp_path / "faces", n=12)
    course.load_split(root, "train")
    assert list((tmp_path / "cache").rglob("*.npy"))

"""Typed configs: one dataclass per registered builder (in the module named after its group), plus the
tracking and root schemas and their registration in Hydra's ConfigStore.

The YAML files in `conf/` extend these schemas (`defaults: [/schema/<group>/<name>@_here_, _self_]`), so
Hydra rejects a wrong type or an unknown key while composing, long before Keras is imported. Fields of a
builder's schema are exactly that builder's keyword arguments (checked by tests/test_config.py).
"""

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from nnlab.config.data import (AirlineConfig, AugmentConfig, BostonConfig, Cifar10Config, CsvTableConfig,
                               DetectionFolderConfig, DigitsConfig, FacesConfig, IdxConfig, ImageFolderConfig,
                               NoisyCurveConfig, NotMnistConfig, OxfordPetsConfig, ScenesConfig,
                               SegmentationFolderConfig)
from nnlab.config.models import (AlexNetConfig, CNNConfig, LSTMConfig, MLPConfig, ResNetConfig, RetinaNetConfig,
                                 TransferConfig, UNetConfig)
from nnlab.config.optim import AdamConfig, AdamWConfig, NadamConfig, RMSpropConfig, SGDConfig
from nnlab.config.train import TrainerConfig


def user_data_dir() -> str:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return str(Path(base) / "nnlab" / "datasets")


def cache_dir() -> str:
    """Where decoded images are cached: $NNLAB_CACHE_DIR, else the user's cache folder (never the data folder,
    which may be shared or read-only)."""
    if os.environ.get("NNLAB_CACHE_DIR"):
        return os.environ["NNLAB_CACHE_DIR"]
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return str(Path(base) / "nnlab")


DEFAULT_STORE = "sqlite:///mlflow.db"  # one person's store, in the working directory
# $MLFLOW_TRACKING_URI as the process found it: MLflow itself sets that variable whenever a job opens its store,
# so read later it would send the next job of the same process (a notebook, a test) to the previous job's store.
STARTING_STORE = os.environ.get("MLFLOW_TRACKING_URI")


def default_store() -> str:
    """tracking.uri's default: $MLFLOW_TRACKING_URI where the user set it (a class's server), else DEFAULT_STORE."""
    return STARTING_STORE or DEFAULT_STORE


for _name, _fn in (("nnlab.user_data_dir", user_data_dir), ("nnlab.cache_dir", cache_dir),
                   ("nnlab.pid", os.getpid),  # output folders of processes started in the same second differ
                   ("nnlab.default_store", default_store)):
    if not OmegaConf.has_resolver(_name):
        OmegaConf.register_new_resolver(_name, _fn)


@dataclass
class TrackingConfig:
    uri: str = "${nnlab.default_store:}"  # default_store(); relative paths resolve against the working directory
    experiment: str = "nnlab"
    run_name: str | None = None
    artifact_location: str | None = None  # None: ./mlartifacts beside a SQLite store
    tags: dict[str, str] = field(default_factory=dict)
    resume: str | None = None  # a run id: continue that run from its checkpoint (what `nnlab resume ID` does)
    system_metrics: bool = False  # MLflow's system metrics (CPU, memory, disk, network; GPU where pynvml is installed)


@dataclass
class Config:
    dataset: Any = MISSING
    model: Any = MISSING
    optimizer: Any = MISSING
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    seed: int = 42
    data_root: str = "${oc.env:NNLAB_DATA_DIR,${nnlab.user_data_dir:}}"
    plugins: list[str] = field(default_factory=list)  # modules to import: user builders register there
    sweep_name: str | None = None  # set by conf/sweep presets: names the sweep's parent run


SCHEMAS: dict[str, dict[str, type]] = {
    "dataset": {
        "digits": DigitsConfig, "fashion_mnist": IdxConfig, "mnist": IdxConfig, "notmnist": NotMnistConfig,
        "cifar10": Cifar10Config, "image_folder": ImageFolderConfig, "fruits": ImageFolderConfig,
        "hotdog": ImageFolderConfig, "faces": FacesConfig, "boston": BostonConfig, "airline": AirlineConfig,
        "csv_table": CsvTableConfig, "scenes": ScenesConfig, "segmentation_folder": SegmentationFolderConfig,
        "oxford_pets": OxfordPetsConfig, "detection_folder": DetectionFolderConfig,
        "noisy_curve": NoisyCurveConfig,
    },
    "model": {"mlp": MLPConfig, "cnn": CNNConfig, "alexnet": AlexNetConfig, "resnet": ResNetConfig,
              "transfer": TransferConfig, "lstm": LSTMConfig, "unet": UNetConfig,
              "retinanet": RetinaNetConfig},
    "optimizer": {
        "sgd": SGDConfig,
        "adam": AdamConfig,
        "adamw": AdamWConfig,
        "nadam": NadamConfig,
        "rmsprop": RMSpropConfig,
    },
    "trainer": {"default": TrainerConfig},
    "tracking": {"mlflow": TrackingConfig},
}


def builder_kwargs(group: str, cfg: Any) -> dict[str, Any]:
    """A builder's keyword arguments (with `name`) from its typed config, or from a mapping completed with the
    defaults of the schema of that name: the dataclass is the one home of every default. A plugin's builder
    without a schema gets the mapping as it is."""
    if dataclasses.is_dataclass(cfg):
        return dataclasses.asdict(cfg)
    cfg = dict(cfg) if isinstance(cfg, Mapping) else OmegaConf.to_container(cfg, resolve=True)
    schema = SCHEMAS[group].get(cfg.get("name"))
    if schema is None:
        return cfg
    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema), cfg)
        return OmegaConf.to_container(merged, resolve=True, throw_on_missing=True)
    except OmegaConfBaseException as err:
        from nnlab.errors import ConfigError

        raise ConfigError(f"{group} '{cfg.get('name')}': {str(err).splitlines()[0]}") from None


def typed_config(cfg: Any) -> Config:
    """A resolved config (a run's config.yaml) as typed objects again, each group through its schema (a plugin's
    group without a schema stays a mapping)."""
    node = OmegaConf.create(cfg) if isinstance(cfg, (str, dict)) else cfg
    groups = ("dataset", "model", "optimizer")
    merged = OmegaConf.merge(OmegaConf.structured(Config), {k: v for k, v in node.items() if k not in groups})
    for group in groups:
        schema = SCHEMAS[group].get(node[group].get("name"))
        merged[group] = OmegaConf.merge(OmegaConf.structured(schema), node[group]) if schema else node[group]
    return OmegaConf.to_object(merged)  # type: ignore[return-value]


def register_configs() -> None:
    cs = ConfigStore.instance()
    cs.store(name="nnlab_schema", node=Config)
    for group, schemas in SCHEMAS.items():
        for name, schema in schemas.items():
            cs.store(group=f"schema/{group}", name=name, node=schema)


register_configs()

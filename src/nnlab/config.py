"""Typed configs: one dataclass per registered builder, plus the trainer, tracking and root schemas.

The YAML files in `conf/` extend these schemas (`defaults: [/schema/<group>/<name>@_here_, _self_]`), so
Hydra rejects a wrong type or an unknown key while composing, long before Keras is imported. Fields of a
builder's schema are exactly that builder's keyword arguments (checked by tests/test_config.py).
"""

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf


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


for _name, _fn in (("nnlab.user_data_dir", user_data_dir), ("nnlab.cache_dir", cache_dir)):
    if not OmegaConf.has_resolver(_name):
        OmegaConf.register_new_resolver(_name, _fn)


# ---------------------------------------------------------------- datasets
@dataclass
class DatasetConfig:
    name: str = MISSING
    path: str | None = None
    limit: int | None = None  # at most this many training examples (validation split included)
    val_split: float = 0.1


@dataclass
class DigitsConfig(DatasetConfig):
    name: str = "digits"
    test_split: float = 0.2


@dataclass
class IdxConfig(DatasetConfig):
    download: bool = True  # try the public URL when the files are missing


@dataclass
class ImageDatasetConfig(DatasetConfig):
    max_bad_fraction: float = 0.01  # fail when more than this share of the image files cannot be read
    cache_dir: str | None = "${nnlab.cache_dir:}"  # decoded-image cache; null: decode every run


@dataclass
class ImageFolderConfig(ImageDatasetConfig):
    name: str = "image_folder"
    train_dir: str = "train"  # class folders under path/train_dir (or under path itself)
    test_dir: str | None = "test"  # when path/test_dir is missing, a seeded `test_split` is held out
    classes: list[str] | None = None  # a subset of the class folders, in label order
    image_size: list[int] = field(default_factory=lambda: [128, 128])  # height, width
    color_mode: str = "rgb"  # rgb | grayscale
    crop_to_aspect_ratio: bool = False  # centre-crop instead of squashing odd shapes
    test_split: float = 0.2


@dataclass
class FacesConfig(ImageDatasetConfig):
    name: str = "faces"
    labels_file: str = "labels.csv"
    images_dir: str = "final_files"
    file_column: str = "file_name"
    target_column: str = "real_age"
    image_size: list[int] = field(default_factory=lambda: [224, 224])
    test_split: float = 0.25


@dataclass
class Cifar10Config(ImageDatasetConfig):
    name: str = "cifar10"


@dataclass
class NotMnistConfig(ImageDatasetConfig):
    name: str = "notmnist"
    test_split: float = 0.2  # held out when the copy has one split only


@dataclass
class BostonConfig(DatasetConfig):
    name: str = "boston"
    test_split: float = 0.2
    split_seed: int = 113  # keras.datasets.boston_housing's test split
    folds: int | None = None  # k-fold: validate on fold `fold` of the training part instead of val_split
    fold: int = 0
    standardize_features: bool = True  # mean/std from the training part only


@dataclass
class AirlineConfig(DatasetConfig):
    name: str = "airline"
    column: str = "Passengers"
    window: int = 12  # months of history per example
    test_split: float = 0.33  # the last third of the months
    val_split: float = 0.0  # the last part of the training windows
    scale: str = "minmax"  # minmax | standard | none, fitted on the training months


@dataclass
class CsvTableConfig(DatasetConfig):
    name: str = "csv_table"
    target: str = "target"  # column to predict
    features: list[str] | None = None  # input columns; default: all others
    task: str = "auto"  # auto | classification | regression
    sep: str | None = None  # None: sniffed
    test_path: str | None = None  # a separate test CSV; else a seeded `test_split` is held out
    test_split: float = 0.2
    standardize_features: bool = True


@dataclass
class AugmentConfig:
    """Training-only augmentation (Keras preprocessing layers); the keys of nnlab.data.augment."""

    flip: str | None = None  # horizontal | vertical | horizontal_and_vertical
    rotation: float = 0.0  # fraction of a full turn
    zoom: float = 0.0  # fraction of the image size
    shift: float = 0.0  # fraction of the image size
    contrast: float = 0.0
    brightness: float = 0.0  # images are scaled to [0, 1]
    fill_mode: str = "reflect"  # reflect | constant | nearest | wrap


# ---------------------------------------------------------------- models
@dataclass
class ModelConfig:
    name: str = MISSING


@dataclass
class MLPConfig(ModelConfig):
    name: str = "mlp"
    widths: list[int] | None = None  # explicit hidden widths; else `depth` layers of `width`
    depth: int = 2
    width: int = 256
    activation: str = "relu"
    dropout: float = 0.0
    batch_norm: bool = False
    l1: float = 0.0
    l2: float = 0.0


@dataclass
class ConvBlockConfig:
    filters: int = 32
    kernel: int = 3
    convs: int = 1  # conv layers before the pooling
    pool: str = "max"  # max | avg | none
    dropout: float = 0.0


@dataclass
class CNNConfig(ModelConfig):
    name: str = "cnn"
    blocks: list[ConvBlockConfig] = field(
        default_factory=lambda: [ConvBlockConfig(32), ConvBlockConfig(64)]
    )
    dense: list[int] = field(default_factory=lambda: [128])
    activation: str = "relu"
    batch_norm: bool = False
    dropout: float = 0.0  # after each dense layer of the head (or after the features if none)
    global_pool: bool = False  # global average pooling instead of flatten
    l2: float = 0.0


# ---------------------------------------------------------------- optimizers
@dataclass
class ScheduleConfig:
    name: str = "constant"  # constant | cosine | exponential | plateau
    warmup_epochs: int = 0  # linear warm-up (cosine)
    alpha: float = 0.0  # cosine: final lr as a fraction of the initial one
    decay_rate: float = 0.9  # exponential: factor per epoch
    factor: float = 0.5  # plateau: lr multiplier when val_loss stalls
    patience: int = 2  # plateau
    min_lr: float = 1e-6  # plateau


@dataclass
class OptimizerConfig:
    name: str = MISSING
    learning_rate: float = 1e-3
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    clipnorm: float | None = None


@dataclass
class SGDConfig(OptimizerConfig):
    name: str = "sgd"
    learning_rate: float = 0.01
    momentum: float = 0.0
    nesterov: bool = False


@dataclass
class MomentsConfig(OptimizerConfig):
    """The Adam family's first/second-moment settings."""

    beta_1: float = 0.9
    beta_2: float = 0.999
    epsilon: float = 1e-7


@dataclass
class AdamConfig(MomentsConfig):
    name: str = "adam"
    amsgrad: bool = False


@dataclass
class AdamWConfig(AdamConfig):
    name: str = "adamw"
    weight_decay: float = 0.004


@dataclass
class NadamConfig(MomentsConfig):
    name: str = "nadam"


@dataclass
class RMSpropConfig(OptimizerConfig):
    name: str = "rmsprop"
    rho: float = 0.9
    momentum: float = 0.0
    epsilon: float = 1e-7
    centered: bool = False


# ---------------------------------------------------------------- trainer, tracking, root
@dataclass
class EarlyStoppingConfig:
    patience: int | None = None  # None: off
    monitor: str = "val_loss"
    min_delta: float = 0.0
    restore_best_weights: bool = True


@dataclass
class TrainerConfig:
    epochs: int = 10
    batch_size: int = 128
    max_minutes: float | None = None  # stop after the epoch that would overrun this budget
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)
    loss: str | None = None  # None: by task (sparse categorical cross-entropy / MSE)
    metrics: list[str] | None = None  # None: by task (accuracy / MAE, RMSE)
    mixed_precision: bool = False  # mixed_float16 on a GPU; ignored (and logged so) on CPU
    jit_compile: bool | None = None  # None: Keras "auto" (XLA where it helps)
    verbose: int | None = None  # Keras progress: None = bars on a terminal, one line per epoch otherwise
    save_model: bool = True


@dataclass
class TrackingConfig:
    uri: str = "sqlite:///mlflow.db"  # relative paths resolve against the working directory
    experiment: str = "nnlab"
    run_name: str | None = None
    artifact_location: str | None = None  # None: ./mlartifacts beside a SQLite store
    tags: dict[str, str] = field(default_factory=dict)


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


SCHEMAS: dict[str, dict[str, type]] = {
    "dataset": {
        "digits": DigitsConfig, "fashion_mnist": IdxConfig, "mnist": IdxConfig, "notmnist": NotMnistConfig,
        "cifar10": Cifar10Config, "image_folder": ImageFolderConfig, "fruits": ImageFolderConfig,
        "hotdog": ImageFolderConfig, "faces": FacesConfig, "boston": BostonConfig, "airline": AirlineConfig,
        "csv_table": CsvTableConfig,
    },
    "model": {"mlp": MLPConfig, "cnn": CNNConfig},
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


def register_configs() -> None:
    cs = ConfigStore.instance()
    cs.store(name="nnlab_schema", node=Config)
    for group, schemas in SCHEMAS.items():
        for name, schema in schemas.items():
            cs.store(group=f"schema/{group}", name=name, node=schema)


register_configs()

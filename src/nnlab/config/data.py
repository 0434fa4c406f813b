"""Schemas of the `dataset` group (nnlab.data builders) and of the top-level `augment` node."""

from dataclasses import dataclass, field
from typing import Any, ClassVar

from omegaconf import MISSING

from nnlab.config import augment_checks, checks


@dataclass
class DatasetConfig:
    name: str = MISSING
    path: str | None = None
    limit: int | None = None  # at most this many training examples (validation split included)
    val_split: float = 0.1
    rules: ClassVar[dict] = checks.DATASET  # value checks by field name (nnlab.config.checks)

    def __post_init__(self) -> None:
        checks.validate(self, "dataset", self.rules)


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
    # An image of more pixels is refused from its header (never decoded) and counted as unreadable; the default
    # is Pillow's Image.MAX_IMAGE_PIXELS (a 20000x20000 PNG of a few hundred KB holds 1.2 GB of RGB pixels).
    max_image_pixels: int = 89_478_485


@dataclass
class ImageFolderConfig(ImageDatasetConfig):
    name: str = "image_folder"
    path: str | None = MISSING  # the folder holding train/ (and test/), or the class folders themselves
    train_dir: str = "train"  # class folders under path/train_dir (or under path itself)
    test_dir: str | None = "test"  # when path/test_dir is missing, a seeded `test_split` is held out
    more_train_dirs: list[str] = field(default_factory=list)  # more class trees under path joining the training pool
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
    log_features: list[str] = field(default_factory=list)  # log(1 + x) of skewed columns, e.g. [CRIM, LSTAT]

    def __post_init__(self) -> None:
        super().__post_init__()
        checks.fold("dataset", self)


@dataclass
class AirlineConfig(DatasetConfig):
    name: str = "airline"
    column: str = "Passengers"
    window: int = 12  # months of history per example
    test_split: float = 0.33  # the last third of the months
    val_split: float = 0.0  # the last part of the training windows
    scale: str = "minmax"  # minmax | standard | none, fitted on the training months
    difference: int = 0  # k > 0: model the change over k months (12: year on year), inputs and target
    rules: ClassVar[dict] = checks.AIRLINE


@dataclass
class CsvTableConfig(DatasetConfig):
    name: str = "csv_table"
    path: str | None = MISSING  # the CSV file
    target: str = MISSING  # column to predict
    features: list[str] | None = None  # input columns; default: all others
    task: str = "auto"  # auto | classification | regression
    sep: str | None = None  # None: sniffed
    test_path: str | None = None  # a separate test CSV; else a seeded `test_split` is held out
    test_split: float = 0.2
    standardize_features: bool = True
    rules: ClassVar[dict] = checks.CSV_TABLE


@dataclass
class NoisyCurveConfig(DatasetConfig):
    """The dropout homework's data (nnlab.data.curves): y = sin(x) + Gaussian noise, generated offline."""

    name: str = "noisy_curve"
    count: int = 100  # noisy points in the pool: 20 train (few, so a wide network can learn them by heart)
    val_split: float = 0.8  # and 80 validate: fewer would make the validation error (and best epoch) mostly noise
    test_count: int = 1000
    x_range: list[float] = field(default_factory=lambda: [-3.0, 3.0])  # x is uniform in [low, high]
    noise: float = 0.3  # std of the noise added to every target (the test MAE cannot go below ~0.8 * noise)
    rules: ClassVar[dict] = checks.NOISY_CURVE


@dataclass
class AugmentConfig:
    """Training-only augmentation; the keys of nnlab.data.augment. library=keras: preprocessing layers in the
    model (flip … fill_mode); library=albumentations: `transforms` applied in the input pipeline."""

    flip: str | None = None  # horizontal | vertical | horizontal_and_vertical
    rotation: float = 0.0  # fraction of a full turn
    zoom: float = 0.0  # fraction of the image size
    shift: float = 0.0  # fraction of the image size
    contrast: float = 0.0
    brightness: float = 0.0  # images are scaled to [0, 1]
    fill_mode: str = "reflect"  # reflect | constant | nearest | wrap
    library: str = "keras"  # keras | albumentations (pip install -e '.[albumentations]')
    # albumentations only: transforms by class name with their arguments, e.g. [{name: HorizontalFlip, p: 0.5}]
    transforms: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        checks.validate(self, "augment", augment_checks.AUGMENT)
        augment_checks.augment_library("augment", self)


@dataclass
class ScenesConfig(DatasetConfig):
    """Generated canvases of items over textures, with exact masks or boxes (nnlab.data.scenes)."""

    name: str = "scenes"
    path: str | None = None  # the Fashion-MNIST IDX folder, read only when source=fashion_mnist
    count: int = 2000  # canvases in all; test_split of them are drawn from held-out items
    test_split: float = 0.2
    source: str = "digits"  # digits (scikit-learn's 8x8, bundled) | fashion_mnist (the IDX files in path)
    canvas_size: list[int] = field(default_factory=lambda: [64, 64])  # height, width
    items: list[int] = field(default_factory=lambda: [1, 4])  # min, max items per canvas
    item_size: list[int] = field(default_factory=lambda: [16, 28])  # min, max side in pixels (scaled up)
    classes: list[int] | None = None  # source class indices to use; null: all 10
    max_overlap: float = 0.0  # share of an item's box that a later item may cover; 0: items never overlap
    noise: float = 0.03  # std of the pixel noise, in 0-1 units
    texture: bool = True  # gradients, blotches and stripes behind the items; false: one flat colour
    target: str = "masks"  # masks (task segmentation) | boxes (task detection)
    rules: ClassVar[dict] = checks.SCENES


@dataclass
class SegmentationFolderConfig(ImageDatasetConfig):
    name: str = "segmentation_folder"
    path: str | None = MISSING  # holds images/ + masks/, or train/ and test/ each holding them
    test_split: float = 0.2  # held out when there is no test/ folder
    classes: list[str] | None = None  # names by mask value; null: background/foreground for 0/255, else 0..K
    image_size: list[int] = field(default_factory=lambda: [128, 128])  # height, width
    color_mode: str = "rgb"  # rgb | grayscale (masks are never converted)


@dataclass
class DetectionFolderConfig(ImageDatasetConfig):
    name: str = "detection_folder"
    path: str | None = MISSING  # holds images/ + annotations.json (COCO) or annotations/*.xml (VOC), or train/, test/
    test_split: float = 0.2  # held out when there is no test/ folder
    classes: list[str] | None = None  # class names in label order; null: COCO categories by id, or VOC names sorted
    image_size: list[int] = field(default_factory=lambda: [256, 256])  # height, width (boxes are scaled along)
    color_mode: str = "rgb"  # rgb | grayscale


@dataclass
class OxfordPetsConfig(ImageDatasetConfig):
    name: str = "oxford_pets"
    test_split: float = 0.2
    image_size: list[int] = field(default_factory=lambda: [160, 160])  # as in the keras-io U-Net example

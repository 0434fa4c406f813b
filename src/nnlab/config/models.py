"""Schemas of the `model` group (nnlab.models builders)."""

from dataclasses import dataclass, field
from typing import Any, ClassVar

from omegaconf import MISSING

from nnlab.config import checks


@dataclass
class ModelConfig:
    name: str = MISSING
    param_budget: int | None = None  # solve `width` so the model has this many parameters (within 5%)
    max_params: int | None = None  # refuse to train a bigger model (checked before training)
    ensemble: int = 1  # members trained side by side, predictions averaged (regression and two-class heads)
    rules: ClassVar[dict] = checks.MODEL  # value checks by field name (nnlab.config.checks)

    def __post_init__(self) -> None:
        checks.validate(self, "model", self.rules)


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
    rules: ClassVar[dict] = checks.MLP


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


@dataclass
class AlexNetConfig(ModelConfig):
    name: str = "alexnet"
    filters: list[int] = field(default_factory=lambda: [32, 64, 96, 96, 64])  # one entry per conv stage
    kernels: list[int] = field(default_factory=lambda: [5, 5, 3, 3, 3])  # same length as filters
    stem_stride: int = 1  # stride of the very first conv
    pool_after: list[int] = field(default_factory=lambda: [1, 2, 5])  # 1-based stages followed by max pooling
    dense: list[int] = field(default_factory=lambda: [512, 512])
    width: float = 1.0  # multiplies every filter and dense unit count
    depth: int = 1  # conv layers per stage
    batch_norm: bool = True
    dropout: float = 0.5  # after each dense layer (or after the features if none)
    activation: str = "relu"
    l2: float = 0.0
    rules: ClassVar[dict] = checks.FILTER_LIST


@dataclass
class ResNetConfig(ModelConfig):
    name: str = "resnet"
    stages: list[int] = field(default_factory=lambda: [2, 2, 2])  # residual blocks per stage
    filters: list[int] = field(default_factory=lambda: [32, 64, 128])  # one entry per stage
    block: str = "basic"  # basic | bottleneck (outputs 4x filters)
    stem_filters: int = 32
    stem_kernel: int = 3
    stem_stride: int = 1
    stem_pool: bool = False  # 3x3/2 max pool after the stem
    width: float = 1.0  # multiplies the stage filters
    dropout: float = 0.0  # after global average pooling
    l2: float = 0.0
    rules: ClassVar[dict] = checks.FILTER_LIST


@dataclass
class LSTMConfig(ModelConfig):
    name: str = "lstm"
    units: list[int] = field(default_factory=lambda: [64])  # one recurrent layer per entry
    cell: str = "lstm"  # lstm | gru
    bidirectional: bool = False
    dropout: float = 0.0  # on each recurrent layer's inputs and after each dense layer
    recurrent_dropout: float = 0.0
    dense: list[int] = field(default_factory=list)
    activation: str = "relu"  # of the dense layers


@dataclass
class TransferConfig(ModelConfig):
    name: str = "transfer"
    backbone: str = "MobileNetV2"  # any keras.applications model, e.g. EfficientNetB0, ResNet50V2
    weights: str | None = None  # null | imagenet | path to a .keras/.h5/.weights.h5 file
    trainable: Any = "all"  # all | none | N top backbone layers | [layer-name prefixes]
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)  # e.g. {alpha: 0.35} for MobileNetV2
    resize: list[int] | None = None  # [height, width] the inputs are resized to first
    preprocess: str = "auto"  # auto (the family's ImageNet scaling) | tf | torch | caffe | raw | none
    freeze_batch_norm: bool | None = None  # null: frozen (inference mode) whenever weights are loaded
    pooling: str = "avg"  # avg | max | flatten
    dense: list[int] = field(default_factory=list)
    dropout: float = 0.2
    l2: float = 0.0


@dataclass
class UNetConfig(ModelConfig):
    name: str = "unet"
    depth: int = 4  # down-sampling levels; image sides must be divisible by 2**depth
    filters: int = 16  # filters of the first level, doubled per level (bottleneck: filters * 2**depth)
    width: float = 1.0  # multiplies every filter count (what param_budget solves)
    convs: int = 2  # 3x3 convs per encoder and decoder block
    batch_norm: bool = True  # after every conv of the blocks
    dropout: float = 0.0  # after the bottleneck and after each decoder block
    upsampling: str = "transpose"  # transpose (2x2 stride-2 Conv2DTranspose) | bilinear (UpSampling2D + 3x3 conv)
    activation: str = "relu"
    l2: float = 0.0
    backbone: str | None = None  # null: the plain conv encoder; else a keras.applications model, e.g. MobileNetV2
    weights: str | None = None  # with a backbone: null | imagenet | path to a .keras/.h5/.weights.h5 file
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)  # e.g. {alpha: 0.35} for MobileNetV2
    preprocess: str = "auto"  # with a backbone: auto (its family's ImageNet scaling) | tf | torch | caffe | raw | none
    freeze_batch_norm: bool | None = None  # backbone batch norm in inference mode; null: whenever weights load
    rules: ClassVar[dict] = checks.FILTER_COUNT


@dataclass
class RetinaNetConfig(ModelConfig):
    """KerasHub's RetinaNet (detection): an image encoder, a feature pyramid, box and class heads, anchors."""

    name: str = "retinanet"
    encoder: str | None = None  # null: a small ResNet (filters, blocks); else a KerasHub backbone preset (name/dir)
    filters: list[int] = field(default_factory=lambda: [64, 64, 128, 256])  # ResNet stage widths; KerasHub: 64 first
    blocks: list[int] = field(default_factory=lambda: [1, 1, 1, 1])  # basic residual blocks per stage
    min_level: int = 3  # finest pyramid level: stride 2**min_level (3: 8 pixels)
    max_level: int = 5  # coarsest level; image sides must be divisible by 2**max_level
    anchor_size: float = 2.0  # anchor side = anchor_size * stride at each level (2: 16-25 px at level 3)
    head_convs: int = 1  # 3x3 convs (256 filters) in each head before its output
    head_norm: bool = True  # group normalization after the heads' convs (box loss 10x lower after 2 epochs here)
    max_detections: int = 100  # boxes kept per image after non-max suppression
    min_score: float = 0.05  # detections below this score are dropped (low: mAP needs the whole ranking)
    iou_threshold: float = 0.5  # non-max suppression: a box overlapping a better one by more is dropped
    weights: str | None = None  # a .weights.h5 file nnlab saved for this architecture
    rules: ClassVar[dict] = checks.RETINANET

"""Schemas of the `model` group (nnlab.models builders)."""

from dataclasses import dataclass, field

from omegaconf import MISSING


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

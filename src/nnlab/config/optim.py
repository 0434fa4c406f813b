"""Schemas of the `optimizer` group (nnlab.training.optim): Keras optimizer arguments plus a learning-rate schedule."""

from dataclasses import dataclass, field

from omegaconf import MISSING

from nnlab.config import checks


@dataclass
class ScheduleConfig:
    name: str = "constant"  # constant | cosine | linear | onecycle | exponential | plateau
    # cosine, linear and onecycle decay over the run: with trainer.max_minutes (and fit_budget) the run is what
    # the time budget lets this machine train, trainer.epochs only an upper bound; otherwise trainer.epochs.
    fit_budget: bool = True
    warmup_epochs: int = 0  # cosine, linear: linear warm-up from 0 over these epochs
    alpha: float = 0.0  # cosine, linear, onecycle: final lr as a fraction of the peak
    pct_start: float = 0.25  # onecycle: the share of the run spent warming up from lr / div_factor to lr
    div_factor: float = 25.0  # onecycle
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
    use_ema: bool = False  # keep a moving average of the weights; the model ends with the averaged weights
    ema_momentum: float = 0.99

    def __post_init__(self) -> None:
        checks.validate(self, "optimizer", checks.OPTIMIZER)


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

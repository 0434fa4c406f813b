"""Schema of the `trainer` group (nnlab.train)."""

from dataclasses import dataclass, field


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

"""Schema of the `trainer` group (nnlab.training.train)."""

from dataclasses import dataclass, field
from typing import Any

from nnlab.config import checks


@dataclass
class EarlyStoppingConfig:
    patience: int | None = None  # None: off
    monitor: str | None = None  # None: the task's (val_loss; val_mean_iou for segmentation)
    min_delta: float = 0.0
    restore_best_weights: bool = True


@dataclass
class StageConfig:
    """One stage of a schedule (gradual unfreezing): a fresh optimizer, and the model's trainable layers."""

    epochs: int = 1
    trainable: Any = None  # None: as it is | all | none | N top backbone layers | [layer-name prefixes]
    learning_rate: float | None = None  # None: the optimizer's


@dataclass
class TrainerConfig:
    epochs: int = 20
    batch_size: int = 64
    max_minutes: float | None = None  # time budget: stops mid-epoch before the next batch would overrun it
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)
    stages: list[StageConfig] = field(default_factory=list)  # empty: one stage of `epochs`
    loss: str | None = None  # None: the task's (sparse categorical / binary cross-entropy, MSE, …)
    loss_options: dict[str, Any] = field(default_factory=dict)  # e.g. huber: {delta: 2.0}
    metrics: list[str] | None = None  # None: the task's (accuracy / MAE, RMSE / pixel accuracy, mean IoU, Dice)
    mixed_precision: bool = False  # mixed_float16 on a GPU, mixed_bfloat16 on a CPU with bf16 instructions
    jit_compile: bool | None = None  # None: Keras "auto" (XLA where it helps)
    devices: int | None = None  # data-parallel over this many GPUs (nnlab.training.distribute); None: one device
    # Batch-norm moving statistics recomputed over training data for the trained weights (nnlab.training.batchnorm)
    # at an epoch's end, before its validation: auto = while momentum ** updates > 0.001; true = every epoch; false
    precise_bn: Any = "auto"
    threads: int | None = None  # CPU threads per job (TensorFlow, PyTorch); 1 for parallel sweep jobs
    verbose: int | None = None  # Keras progress: None = bars on a terminal, one line per epoch otherwise
    save_model: bool = True  # model.keras in the run's artifacts
    save_h5: bool = False  # also model.h5 (legacy HDF5: Netron, older tools)
    export_dir: str | None = None  # also copy the saved files here
    plot_model: bool = True  # architecture.png (needs pydot and Graphviz; skipped with a tag otherwise)
    netron: bool = False  # netron.png: Netron's graph of model.h5 (else .keras); skipped with a tag without Chromium
    checkpoint: bool = True  # save weights, optimizer and loop state every epoch (what `nnlab resume` needs)
    checkpoint_dir: str | None = None  # None: the job's output folder/checkpoint (./checkpoints/<run> without Hydra)
    keep_checkpoint: bool = False  # keep it after the run finishes (it is removed by default)

    def __post_init__(self) -> None:
        checks.validate(self, "trainer", checks.TRAINER)

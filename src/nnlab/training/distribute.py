"""Data parallelism over several devices (`trainer.devices=N`), with the active Keras backend's own machinery.

Every device holds a copy of the weights and takes an equal share of each batch; the gradients are averaged
across them before every update, so N devices compute what one device computes with the same batches (up to
float rounding). `trainer.batch_size` is the global batch, split across the devices (64 on 2 GPUs: 32 each);
the learning rate, the steps per epoch and the schedules stay as they are on one device.

- TensorFlow: `tf.distribute.MirroredStrategy` over the first N devices. The model is built, compiled, trained,
  evaluated and saved inside its scope, and Keras splits every batch of the input pipeline across the replicas
  (a short last batch unevenly). Keras reads one batch more before the first epoch to build the model under
  a strategy, which moves tf.data's seeded reshuffle on by one epoch: another order than on one device.
- JAX: `keras.distribution.DataParallel` over the first N devices: variables replicated, each training batch
  sharded along its first axis. Keras's JAX trainer shards every batch of an epoch as it sharded the first, so
  batches must split evenly: `trainer.batch_size` must be a multiple of N, and a short last training batch whose
  size is not goes in N copies (the same mean loss and gradient; it weighs N times in the epoch's running
  `loss` and metrics). Validation, test evaluation, prediction and saving run with the distribution off (on
  the replicated weights), so their numbers are exact whatever the data's size.
- PyTorch: Keras has no data-parallel distribution for torch; asking for more than one device is an error.

The devices are the accelerators (GPUs; TPUs on JAX) when there are any, else the CPU devices: one, unless the
CPU is split into virtual devices before the backend starts (how the tests run this on a CPU; see `simulate`).
"""

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import keras

from nnlab.data import pipeline
from nnlab.errors import NnlabError


@dataclass
class Parallel:
    """What `data_parallel` set up: the replica count in sync, their devices, callbacks `model.fit` needs."""

    replicas: int = 1
    devices: list[str] = field(default_factory=list)
    callbacks: list[Any] = field(default_factory=list)


def simulate(count: int, backend: str) -> str:
    """How to split a CPU into `count` virtual devices for `backend`, in words (before the backend starts)."""
    if backend == "jax":
        return f"start the job with XLA_FLAGS=--xla_force_host_platform_device_count={count}"
    return ("call tf.config.set_logical_device_configuration(tf.config.list_physical_devices('CPU')[0], "
            f"[tf.config.LogicalDeviceConfiguration()] * {count}) before TensorFlow starts (e.g. in a module "
            "listed in `plugins`)")


def visible_devices(backend: str) -> tuple[list[str], bool]:
    """(device names, whether they are accelerators) that `backend` can run replicas on."""
    if backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_logical_devices("GPU")
        if gpus:
            return [d.name for d in gpus], True
        return [d.name for d in tf.config.list_logical_devices("CPU")], False
    if backend == "jax":
        import jax

        found = keras.distribution.list_devices()  # the default platform's: GPUs/TPUs if any, else CPUs
        return found, jax.default_backend() != "cpu"
    return [], False


def choose(devices: int, backend: str, visible: list[str], accelerators: bool) -> list[str]:
    """The first `devices` of `visible`, or one sentence saying why that cannot be."""
    if backend not in ("tensorflow", "jax"):
        raise NnlabError(f"trainer.devices={devices}: Keras has no data-parallel training on the {backend} "
                         "backend; run with KERAS_BACKEND=jax or KERAS_BACKEND=tensorflow, or set "
                         "trainer.devices=1.")
    if len(visible) >= devices:
        return visible[:devices]
    if accelerators:
        raise NnlabError(f"trainer.devices={devices} asks for {devices} devices, but {backend} sees "
                         f"{len(visible)}: {', '.join(visible)}; set trainer.devices={len(visible)} or fewer, or "
                         f"run where {devices} GPUs are visible (hydra.launcher.gpus_per_node={devices} on SLURM).")
    cpus = f"{len(visible)} CPU device{'' if len(visible) == 1 else 's'} ({', '.join(visible)})"
    raise NnlabError(f"trainer.devices={devices}: {backend} sees no GPU and {cpus}; run where {devices} GPUs are "
                     f"visible, or, to try data parallelism on this CPU, {simulate(devices, backend)}.")


@contextlib.contextmanager
def data_parallel(devices: int | None, batch_size: int) -> Iterator[Parallel]:
    """Train over `devices` devices (None or 1: as without it) until the block ends. Enter it after the
    runtime's setup (it starts the backend's runtime) and before the model is built (its variables are
    placed by it); pass `callbacks` to `model.fit`."""
    if not devices or devices == 1:
        yield Parallel()
        return
    backend = keras.backend.backend()
    if backend not in ("tensorflow", "jax"):
        choose(devices, backend, [], False)
    names = choose(devices, backend, *visible_devices(backend))
    if backend == "tensorflow":
        import tensorflow as tf

        strategy = tf.distribute.MirroredStrategy(devices=names)
        with strategy.scope():
            yield Parallel(strategy.num_replicas_in_sync, names)
        return
    if batch_size % devices:
        raise NnlabError(f"trainer.batch_size={batch_size} does not split evenly over trainer.devices={devices} "
                         f"on JAX; choose a batch size that is a multiple of {devices}.")
    distribution = keras.distribution.DataParallel(devices=names)
    before, splits = keras.distribution.distribution(), pipeline.even_split()
    keras.distribution.set_distribution(distribution)
    pipeline.even_split(devices)
    try:
        yield Parallel(len(names), names, [TrainingSteps(distribution, before)])
    finally:
        keras.distribution.set_distribution(before)
        pipeline.even_split(splits)


class TrainingSteps(keras.callbacks.Callback):
    """JAX: the distribution on while an epoch's training batches run, off for validation, the task's epoch-end
    scores and everything after `fit` (their last batch need not split evenly; the weights stay replicated)."""

    def __init__(self, distribution, outside) -> None:
        super().__init__()
        self.distribution, self.outside = distribution, outside

    def on_epoch_begin(self, epoch, logs=None) -> None:
        keras.distribution.set_distribution(self.distribution)

    def off(self, *args, **kwargs) -> None:
        keras.distribution.set_distribution(self.outside)

    on_test_begin = on_predict_begin = on_epoch_end = on_train_end = off

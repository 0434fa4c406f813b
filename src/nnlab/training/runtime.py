"""The runtime a job trains in: seeds, CPU threads, the dtype policy (mixed precision where it pays), and the
devices the Keras backend sees."""

import logging
from pathlib import Path
from typing import Any

import keras

log = logging.getLogger(__name__)


def devices() -> list[str]:
    """Accelerators visible to the active Keras backend, as readable names; empty on CPU."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return [d.name for d in tf.config.list_physical_devices("GPU")]
    if backend == "jax":
        import jax

        return [str(d) for d in jax.devices() if d.platform != "cpu"]
    if backend == "torch":
        import torch

        return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return []


def set_threads(threads: int | None) -> None:
    """CPU threads for this job's math. Parallel sweep jobs (joblib) each default to every core and then fight
    over them; one or two threads a job lets them share the machine."""
    if not threads:
        return
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(threads)
        except RuntimeError:  # the runtime started for an earlier job of this process: its setting stays
            if tf.config.threading.get_intra_op_parallelism_threads() != threads:
                log.warning("trainer.threads=%d not applied: TensorFlow started earlier in this process", threads)
    elif backend == "torch":
        import torch

        torch.set_num_threads(threads)
    else:
        log.warning("trainer.threads is not applied on %s; limit its threads before start (e.g. XLA_FLAGS)", backend)


def setup_runtime(seed: int, mixed_precision: bool, threads: int | None = None) -> dict[str, Any]:
    """Seed everything, set the thread count and the dtype policy; returns facts worth logging."""
    set_threads(threads)
    # Jobs of a sweep share one process: drop the previous job's graphs and layer-name counters.
    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    gpus = devices()
    policy = dtype_policy(mixed_precision, gpus)
    keras.mixed_precision.set_dtype_policy(policy)
    return {
        "backend": keras.backend.backend(),
        "device": ", ".join(gpus) if gpus else "CPU",
        "mixed_precision_effective": policy != "float32",
        "dtype_policy": policy,
    }


def dtype_policy(mixed_precision: bool, gpus: list[str]) -> str:
    """float16 compute on an accelerator; bfloat16 on a CPU that computes it natively (TensorFlow's oneDNN
    kernels: RetinaNet trained at 1.6-2.0x the images/s on this project's AVX512-BF16 CPU); float32 elsewhere, since
    emulated half precision on other CPUs is slower than float32."""
    if not mixed_precision:
        return "float32"
    if gpus:
        return "mixed_float16"
    if keras.backend.backend() == "tensorflow" and cpu_has_bfloat16():
        return "mixed_bfloat16"
    log.warning("trainer.mixed_precision=true ignored: no GPU and no bfloat16 instructions on this CPU (or not "
                "TensorFlow), training in float32")
    return "float32"


def cpu_has_bfloat16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether the CPU has bfloat16 arithmetic (AVX512-BF16 or AMX), by the flags Linux lists; False elsewhere."""
    try:
        flags = set(Path(cpuinfo).read_text().split())
    except OSError:
        return False
    return bool(flags & {"avx512_bf16", "amx_bf16"})

"""What a checkpoint costs an epoch now that it is checked (free space before, sha256 and fsync of the weights
after, the last two kept) against Keras's bare save_weights into a new folder (what nnlab did before), and what
checking one on resume costs. Generated models, no data, any backend.

    python benchmarks/checkpoint_cost.py [--params 1.7e6 25e6] [--repeats 5] [--folder /tmp/ckpt-bench]
"""

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def model_of(params: float):
    import keras

    width = int((params / 2) ** 0.5)  # two square dense layers
    model = keras.Sequential([keras.Input((width,)), keras.layers.Dense(width), keras.layers.Dense(width)])
    model.compile("adam", "mse")
    model.optimizer.build(model.trainable_variables)  # Adam's two slots per weight, as after the first batch
    return model


def median_seconds(action, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(params: float, root: Path, repeats: int) -> str:
    """One table row: the median seconds of each way to write a checkpoint, and of checking one."""
    from nnlab.training.checkpoints import load_checkpoint, save_checkpoint

    model = model_of(params)
    state = {"stage": 0, "result": {"history": {"loss": [1.0]}}, "budget": {}}
    bare, checked, counter = root / "bare", root / "checked", iter(range(1, 10**6))

    def save_bare():
        slot = bare / f"epoch-{next(counter):05d}"
        slot.mkdir(parents=True)
        model.save_weights(slot / "weights.weights.h5")
        shutil.rmtree(slot)

    def save_checked():
        save_checkpoint(checked, model, {**state, "epoch": next(counter)})

    t_bare = median_seconds(save_bare, repeats)
    t_checked = median_seconds(save_checked, repeats)
    t_load = median_seconds(lambda: load_checkpoint(checked), repeats)
    size = next(checked.glob("epoch-*")).joinpath("weights.weights.h5").stat().st_size
    shutil.rmtree(bare, ignore_errors=True)
    shutil.rmtree(checked, ignore_errors=True)
    return (f"| {model.count_params() / 1e6:.1f} M | {size / 2**20:.0f} MB | {t_bare:.3f} s | {t_checked:.3f} s | "
            f"{t_load:.3f} s |")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--params", type=float, nargs="+", default=[1.7e6, 25e6])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--folder", default=None, help="where to write (default: a new temp folder)")
    args = parser.parse_args()
    root = Path(args.folder or tempfile.mkdtemp(prefix="ckpt-bench-"))
    print("| parameters | checkpoint file | bare save_weights | nnlab save_checkpoint | load_checkpoint (check) |")
    print("|---|---|---|---|---|")
    for params in args.params:
        print(measure(params, root, args.repeats))
    if not args.folder:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()

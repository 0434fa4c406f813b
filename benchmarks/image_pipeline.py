"""Images per second: nnlab's image-folder pipeline vs Keras's ImageDataGenerator.flow_from_directory.

Both read the same class-folder tree at the same target size and batch size and hand out shuffled batches,
as `model.fit` would consume them; no model runs, so this is the input pipeline alone.
  keras   ImageDataGenerator(rescale=1/255).flow_from_directory(...): decodes and resizes every epoch.
  nnlab   class folders → decode once in threads → uint8 cache (.npy) → tf.data index shuffle/batch/prefetch.
          Epoch 1 includes the decoding and the cache write (an empty cache folder); "rerun" is a second
          job's start: it maps the cache instead of decoding, then serves one epoch.

Usage: python benchmarks/image_pipeline.py [--epochs 3] [--batch-size 32]; needs NNLAB_DATA_DIR.
"""

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

TREES = {  # name: (folder under NNLAB_DATA_DIR, target size)
    "fruits-360-more/Training": ("fruits-360-more/Training", (100, 100)),
    "cifar-10-images/train": ("cifar-10-images/train", (32, 32)),
}


def rate(n_images: int, seconds: float) -> float:
    return n_images / seconds


def keras_epochs(root: Path, size, batch_size: int, epochs: int) -> list[float]:
    from tensorflow.keras.preprocessing.image import ImageDataGenerator

    flow = ImageDataGenerator(rescale=1 / 255).flow_from_directory(
        str(root), target_size=size, batch_size=batch_size, class_mode="sparse", shuffle=True, seed=0)
    rates = []
    for _ in range(epochs):
        start = time.perf_counter()
        for i in range(len(flow)):
            flow[i]
        flow.on_epoch_end()
        rates.append(rate(flow.n, time.perf_counter() - start))
    return rates


def nnlab_load(root: Path, size, cache: str):
    from nnlab.data.folders import class_files, find_classes
    from nnlab.data.images import cached_decode

    classes, _ = find_classes([root], None)
    files, labels = class_files(root, classes)
    decoded = cached_decode(files, size, "rgb", False, cache)
    return decoded.images, labels[decoded.good]


def one_epoch(ds) -> None:
    for _x, _y in ds:
        pass


def nnlab_epochs(root: Path, size, batch_size: int, epochs: int) -> tuple[list[float], float]:
    from nnlab.data.pipeline import batches

    with tempfile.TemporaryDirectory() as cache:
        start = time.perf_counter()
        x, y = nnlab_load(root, size, cache)
        ds = batches(x, y, batch_size, shuffle=True, seed=0)
        one_epoch(ds)
        rates = [rate(len(x), time.perf_counter() - start)]
        for _ in range(epochs - 1):
            start = time.perf_counter()
            one_epoch(ds)
            rates.append(rate(len(x), time.perf_counter() - start))
        start = time.perf_counter()  # a later job: the cache is there
        x, y = nnlab_load(root, size, cache)
        one_epoch(batches(x, y, batch_size, shuffle=True, seed=1))
        rerun = rate(len(x), time.perf_counter() - start)
    return rates, rerun


def bench_images(data_root: str, epochs: int = 3, batch_size: int = 32) -> dict:
    results = {}
    for name, (folder, size) in TREES.items():
        root = Path(data_root) / folder
        keras_rates = keras_epochs(root, size, batch_size, epochs)
        nnlab_rates, rerun = nnlab_epochs(root, size, batch_size, epochs)
        later = statistics.median(nnlab_rates[1:]) / statistics.median(keras_rates[1:])
        results[name] = {
            "target_size": list(size), "batch_size": batch_size,
            "keras_images_per_s": [round(r) for r in keras_rates],
            "nnlab_images_per_s": [round(r) for r in nnlab_rates], "nnlab_rerun_first_epoch_images_per_s": round(rerun),
            "speedup_first_epoch": round(nnlab_rates[0] / keras_rates[0], 2), "speedup_later_epochs": round(later, 1),
        }
        print(json.dumps({name: results[name]}), flush=True)
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    print(json.dumps(bench_images(os.environ["NNLAB_DATA_DIR"], args.epochs, args.batch_size), indent=2))

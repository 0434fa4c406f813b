"""Images per second of training-time augmentation: Keras preprocessing layers vs albumentations, same transforms.

The same random horizontal flip, rotation (±36°, Keras's 0.1 of a turn) and shift (±10 % of each side), with
reflected borders, on generated 64x64 RGB uint8 images in batches of 64, each library where nnlab runs it:
  keras           augment.flip/rotation/shift: Rescaling + RandomFlip + RandomRotation + RandomTranslation
                  called with training=True inside a compiled function (as `fit`'s train step runs them; a
                  tf.function on TensorFlow), every core available to its ops.
  albumentations  augment.library=albumentations: nnlab's AlbumentationsTransform (A.Compose of HorizontalFlip
                  and one Affine for rotation + shift) on uint8 batches, in 1 thread and in `--threads` threads
                  (the pipeline's PyDataset workers; OpenCV releases the GIL while it warps); and, like for
                  like with the layers, rotation and shift as two resamplings (Rotate, then Affine), 1 thread.
No model trains: this is the augmentation alone. Needs no data.

Usage: python benchmarks/augment_libraries.py [--images 4096] [--size 64] [--batch-size 64] [--repeats 3]
"""

import argparse
import json
import os
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

TRANSFORMS = [{"name": "HorizontalFlip", "p": 0.5},
              {"name": "Affine", "rotate": [-36, 36], "translate_percent": [-0.1, 0.1], "border_mode": 4, "p": 1.0}]
# border_mode 4 = cv2.BORDER_REFLECT_101, what Keras's fill_mode="reflect" does.
# Like for like with Keras's layers: rotation and shift as two resamplings instead of one Affine.
SEPARATE = [TRANSFORMS[0], {"name": "Rotate", "limit": 36, "border_mode": 4, "p": 1.0},
            {"name": "Affine", "translate_percent": [-0.1, 0.1], "border_mode": 4, "p": 1.0}]


def keras_rate(images: np.ndarray, batch_size: int, repeats: int) -> list[float]:
    import keras

    from nnlab.config.data import AugmentConfig
    from nnlab.data.augment import input_layers

    layers = input_layers(1 / 255, AugmentConfig(flip="horizontal", rotation=0.1, shift=0.1), seed=0)
    model = keras.Sequential([keras.Input(images.shape[1:]), *layers])
    step = compiled(lambda x: model(x, training=True))
    batches = [images[i:i + batch_size] for i in range(0, len(images), batch_size)]
    np.asarray(step(batches[0]))  # trace and warm up
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for batch in batches:
            out = step(batch)
        np.asarray(out)  # wait for the last batch
        rates.append(len(images) / (time.perf_counter() - start))
    return rates


def compiled(fn):
    import keras

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return tf.function(fn)
    return fn


def albumentations_rate(images: np.ndarray, batch_size: int, repeats: int, threads: int,
                        transforms=TRANSFORMS) -> list[float]:
    from nnlab.data.augment import AlbumentationsTransform

    transform = AlbumentationsTransform(transforms)
    starts = range(0, len(images), batch_size)

    def one(i: int) -> np.ndarray:
        return transform(images[i:i + batch_size], None, np.random.default_rng([0, i]))[0]

    rates = []
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, starts))  # each thread builds its Compose
        for _ in range(repeats):
            start = time.perf_counter()
            list(pool.map(one, starts))
            rates.append(len(images) / (time.perf_counter() - start))
    return rates


def bench_augment(images: int = 4096, size: int = 64, batch_size: int = 64, repeats: int = 3,
                  threads: int = 2) -> dict:
    pixels = np.random.default_rng(0).integers(0, 256, (images, size, size, 3), dtype=np.uint8)
    result = {"images": images, "size": size, "batch_size": batch_size, "threads": threads,
              "transforms": TRANSFORMS, "separate": SEPARATE}
    runs = {"keras": lambda: keras_rate(pixels, batch_size, repeats),
            "albumentations_1_thread": lambda: albumentations_rate(pixels, batch_size, repeats, 1),
            f"albumentations_{threads}_threads": lambda: albumentations_rate(pixels, batch_size, repeats, threads),
            "albumentations_separate_1_thread": lambda: albumentations_rate(pixels, batch_size, repeats, 1, SEPARATE)}
    for name, run in runs.items():
        rates = run()
        result[f"{name}_images_per_s"] = round(statistics.median(rates))
        result[f"{name}_all"] = [round(r) for r in rates]
    result["albumentations_vs_keras"] = round(result[f"albumentations_{threads}_threads_images_per_s"]
                                              / result["keras_images_per_s"], 2)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=4096)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    print(json.dumps(bench_augment(args.images, args.size, args.batch_size, args.repeats, args.threads), indent=2))


if __name__ == "__main__":
    main()

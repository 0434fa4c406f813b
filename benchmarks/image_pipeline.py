"""First and later epochs of four image-folder input pipelines, on the same class-folder trees.

Each hands out shuffled batches of one tree at the same target size and batch size, as `model.fit` would consume
them; no model runs, so this is the input pipeline alone. The first epoch is timed from nothing (listing the
folders) to the last batch; later epochs from their first batch to their last.
  nnlab      class folders → decode once (OpenCV in a thread a core where it gives Pillow's pixels, as on these
             trees; else Pillow in worker processes) → uint8 cache (.npy, written behind when large) → tf.data
             index shuffle/batch/prefetch. A fresh, empty cache folder each time, so epoch 1 always decodes;
             "rerun" is a second job's start on that folder: it maps the cache, then serves one epoch. Also
             timed: the first epoch plus any wait for the cache write still running at its end.
  nnlab_1p   the same with `processes=1`: decoding in one thread.
  flow       ImageDataGenerator(rescale=1/255).flow_from_directory(...): decodes and resizes every epoch.
  dataset    keras.utils.image_dataset_from_directory(...): tf.data decoding in TensorFlow's threads, every epoch.

Every measurement runs in a new Python process (a cold start for nnlab's worker pool, as a job gets), after the
imports and after TensorFlow's runtime has started (model.fit starts it whatever feeds it), with the tree's files
already read once (the OS's page cache is warm for every pipeline). Rounds run every pipeline once per tree, in a
rotated order, so a machine that others share slows them alike; ratios are taken within a round, then the median.

Usage: python benchmarks/image_pipeline.py [--rounds 3] [--epochs 3] [--batch-size 32]; needs NNLAB_DATA_DIR.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

TREES = {  # name: (folder under NNLAB_DATA_DIR, target size)
    "fruits-360-more/Training": ("fruits-360-more/Training", (100, 100)),
    "cifar-10-images/train": ("cifar-10-images/train", (32, 32)),
}
METHODS = ("nnlab", "nnlab_1p", "flow", "dataset")


def cpu_seconds() -> float:
    """CPU time of this process and of the children it waited for (nnlab's decoding workers)."""
    return sum(os.times()[:4])


def timed_epochs(make, epochs: int, settle=None) -> tuple[list[float], float, float]:
    """Seconds of each epoch, the CPU seconds of the first, and the seconds `settle()` then took (nnlab: waiting
    for the cache entry that it writes behind, while the epoch runs); the first epoch includes `make()`
    (listing, decoding, building the pipeline)."""
    start, cpu = time.perf_counter(), cpu_seconds()
    run_epoch = make()
    seconds, settled = [], 0.0
    for _ in range(epochs):
        run_epoch()
        seconds.append(time.perf_counter() - start)
        if len(seconds) == 1 and settle is not None:
            settle()
            settled = time.perf_counter() - start - seconds[0]
        cpu = cpu_seconds() - cpu if len(seconds) == 1 else cpu
        start = time.perf_counter()
    return seconds, cpu, settled


def flow_pipeline(root: Path, size, batch_size: int):
    from tensorflow.keras.preprocessing.image import ImageDataGenerator

    flow = ImageDataGenerator(rescale=1 / 255).flow_from_directory(
        str(root), target_size=size, batch_size=batch_size, class_mode="sparse", shuffle=True, seed=0)

    def run_epoch():
        for i in range(len(flow)):
            flow[i]
        flow.on_epoch_end()
    return run_epoch, flow.n


def dataset_pipeline(root: Path, size, batch_size: int):
    import keras

    ds = keras.utils.image_dataset_from_directory(str(root), image_size=size, batch_size=batch_size, shuffle=True,
                                                  seed=0)
    return lambda: one_epoch(ds), None


def nnlab_pipeline(root: Path, size, batch_size: int, cache: str, processes: int | None, seed: int = 0):
    from nnlab.data.folders import class_files, find_classes
    from nnlab.data.image_cache import cached_decode
    from nnlab.data.pipeline import batches

    classes, _ = find_classes([root], None)
    files, labels = class_files(root, classes)
    decoded = cached_decode(files, size, "rgb", False, cache, processes=processes)
    ds = batches(decoded.images, labels[decoded.good], batch_size, shuffle=True, seed=seed)
    return lambda: one_epoch(ds), len(decoded.good)


def one_epoch(ds) -> None:
    for _x, _y in ds:
        pass


def measure(method: str, tree: str, data_root: str, epochs: int, batch_size: int) -> dict:
    """One pipeline on one tree, in this (new) process."""
    import keras  # noqa: F401  (imports, then TensorFlow's runtime, before any timing)
    import tensorflow as tf
    from tensorflow.keras.preprocessing.image import ImageDataGenerator  # noqa: F401

    import nnlab.data.folders  # noqa: F401
    import nnlab.data.pipeline  # noqa: F401

    one_epoch(tf.data.Dataset.range(4).batch(2).prefetch(1))
    folder, size = TREES[tree]
    root = Path(data_root) / folder
    found = {}

    def make():
        if method == "flow":
            run_epoch, found["n"] = flow_pipeline(root, size, batch_size)
        elif method == "dataset":
            run_epoch, found["n"] = dataset_pipeline(root, size, batch_size)
        else:
            run_epoch, found["n"] = nnlab_pipeline(root, size, batch_size, cache, 1 if method == "nnlab_1p" else None)
        return run_epoch

    from nnlab.data.image_cache import wait_all

    with tempfile.TemporaryDirectory(prefix="nnlab-bench-cache-") as cache:  # empty: epoch 1 decodes
        seconds, cpu, cache_wait = timed_epochs(make, epochs, wait_all if method.startswith("nnlab") else None)
        result = {"epochs": seconds, "first_epoch_cpu": cpu, "cache_wait": cache_wait}
        if method == "nnlab":  # a later job on the same files: the cache is there
            rerun, _, _ = timed_epochs(lambda: nnlab_pipeline(root, size, batch_size, cache, None, seed=1)[0], 1)
            result["rerun_first_epoch"] = rerun[0]
    return {**result, "images": found["n"]}


def measure_in_new_process(method: str, tree: str, data_root: str, epochs: int, batch_size: int) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--one", method, tree, "--epochs", str(epochs),
           "--batch-size", str(batch_size)]
    proc = subprocess.run(cmd, env={**os.environ, "NNLAB_DATA_DIR": data_root}, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{method} on {tree} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])  # Keras prints "Found N images…" before it


def warm_page_cache(root: Path) -> int:
    return sum(len(p.read_bytes()) for p in root.rglob("*") if p.is_file())


def bench_images(data_root: str, epochs: int = 3, batch_size: int = 32, rounds: int = 3) -> dict:
    runs = {tree: {m: [] for m in METHODS} for tree in TREES}
    for tree, (folder, _) in TREES.items():
        warm_page_cache(Path(data_root) / folder)
    for r in range(rounds):
        order = METHODS[r % len(METHODS):] + METHODS[: r % len(METHODS)]
        for tree in TREES:
            for method in order:
                runs[tree][method].append(measure_in_new_process(method, tree, data_root, epochs, batch_size))
                print(json.dumps({"round": r, "tree": tree, "method": method, **runs[tree][method][-1]}), flush=True)
    results = {tree: summarize(runs[tree], TREES[tree][1], batch_size) for tree in TREES}
    print(markdown(results), flush=True)
    return results


def summarize(runs: dict, size, batch_size: int) -> dict:
    n = runs["nnlab"][0]["images"]
    first = {m: [run["epochs"][0] for run in runs[m]] for m in METHODS}
    written = {m: [run["epochs"][0] + run["cache_wait"] for run in runs[m]] for m in METHODS}  # flow, dataset: +0
    later = {m: [statistics.median(run["epochs"][1:]) for run in runs[m]] for m in METHODS
             if len(runs[m][0]["epochs"]) > 1}
    rerun = statistics.median(r["rerun_first_epoch"] for r in runs["nnlab"])

    def ratio(times: dict, slow: str, fast: str) -> float:  # per round, then the median: both ran in that round
        return round(statistics.median(a / b for a, b in zip(times[slow], times[fast])), 2)

    return {
        "images": n, "target_size": list(size), "batch_size": batch_size, "rounds": len(runs["nnlab"]),
        "first_epoch_seconds": {m: [round(t, 3) for t in first[m]] for m in METHODS},
        "later_epoch_seconds": {m: [round(t, 3) for t in later[m]] for m in later},
        "first_epoch_images_per_s": {m: round(n / statistics.median(first[m])) for m in METHODS},
        "first_epoch_cpu_seconds": {m: round(statistics.median(r["first_epoch_cpu"] for r in runs[m]), 2)
                                    for m in METHODS},
        "later_epoch_images_per_s": {m: round(n / statistics.median(later[m])) for m in later},
        "nnlab_rerun_first_epoch_images_per_s": round(n / rerun),
        "first_epoch_vs_flow": {m: ratio(first, "flow", m) for m in METHODS if m != "flow"},
        "cache_written_seconds": {m: [round(t, 3) for t in written[m]] for m in ("nnlab", "nnlab_1p")},
        "first_epoch_and_cache_written_vs_flow": {m: ratio(written, "flow", m) for m in ("nnlab", "nnlab_1p")},
        "later_epochs_vs_flow": {m: ratio(later, "flow", m) for m in later if m != "flow"},
        "first_epoch_nnlab_vs_nnlab_1p": ratio(first, "nnlab_1p", "nnlab"),
    }


def markdown(results: dict) -> str:
    lines = ["| tree | pipeline | first epoch (its CPU time) | later epochs | first epoch vs flow (later) |",
             "|---|---|---|---|---|"]
    for tree, r in results.items():
        for m in METHODS:
            seconds = statistics.median(r["first_epoch_seconds"][m])
            first = (f"{seconds:.2f} s, {r['first_epoch_images_per_s'][m]:,} img/s "
                     f"({r['first_epoch_cpu_seconds'][m]:.2f} CPU-s)")
            later = f"{r['later_epoch_images_per_s'].get(m, 0):,} img/s"
            vs = "1" if m == "flow" else f"{r['first_epoch_vs_flow'][m]}× ({r['later_epochs_vs_flow'].get(m)}×)"
            if m in r["first_epoch_and_cache_written_vs_flow"]:
                vs += f"; with the cache written: {r['first_epoch_and_cache_written_vs_flow'][m]}×"
            lines.append(f"| {tree} | {m} | {first} | {later} | {vs} |")
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--one", nargs=2, metavar=("METHOD", "TREE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    data_root = os.environ["NNLAB_DATA_DIR"]
    if args.one:
        print(json.dumps(measure(*args.one, data_root, args.epochs, args.batch_size)))
    else:
        print(json.dumps(bench_images(data_root, args.epochs, args.batch_size, args.rounds), indent=2))

"""Batch norm on small data (issue 25): a U-Net trained on 120 images in batches of 64 makes 16 updates in 8
epochs, too few for batch norm's moving statistics (momentum 0.99) to settle. This builds that case and runs the
job as a user would, with precise batch norm on (the default, `trainer.precise_bn=auto`) and off, printing each
run's test mean IoU, training mean IoU, validation pixel accuracy and `precise_bn` tag.

    python benchmarks/small_data_bn.py [--root /tmp/bn-small] [--settings auto false] [-- EXTRA OVERRIDES]

The dataset (segmentation_folder layout): train/ with 120 and test/ with 40 pairs of 48x48 RGB images/*.png and
masks/*.png; background (class 0, a noisy random-coloured texture) and 1-3 ellipses per image, class 1 reddish,
class 2 bluish. The loader holds 10% of train/ out for validation (108 train, 12 validation). Target: test mean
IoU >= 0.6 with the defaults.
"""

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SIZE, TRAIN, TEST = 48, 120, 40
COLOURS = {1: (200, 60, 50), 2: (50, 80, 200)}


def scene(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One image and its mask: 1-3 ellipses of class 1 or 2 over a noisy background."""
    base = rng.integers(60, 180, 3)
    image = np.clip(base + rng.normal(0, 25, (SIZE, SIZE, 3)), 0, 255)
    mask = np.zeros((SIZE, SIZE), np.uint8)
    rows, cols = np.mgrid[:SIZE, :SIZE]
    for _ in range(rng.integers(1, 4)):
        label = int(rng.integers(1, 3))
        cy, cx = rng.uniform(6, SIZE - 6, 2)
        ry, rx = rng.uniform(4, 12, 2)
        inside = ((rows - cy) / ry) ** 2 + ((cols - cx) / rx) ** 2 <= 1
        colour = np.array(COLOURS[label]) + rng.normal(0, 20, 3)
        image[inside] = np.clip(colour + rng.normal(0, 20, (int(inside.sum()), 3)), 0, 255)
        mask[inside] = label
    return image.astype(np.uint8), mask


def make_dataset(root: Path, seed: int = 0) -> Path:
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, count in (("train", TRAIN), ("test", TEST)):
        for sub in ("images", "masks"):
            (root / split / sub).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            image, mask = scene(rng)
            Image.fromarray(image).save(root / split / "images" / f"{i:04d}.png")
            Image.fromarray(mask).save(root / split / "masks" / f"{i:04d}.png")
    return root


def run(root: Path, work: Path, setting: str, extra: list[str]) -> dict:
    store = f"sqlite:///{work / 'mlflow.db'}"
    experiment = f"small_data_bn_{setting}"
    command = [sys.executable, "-m", "nnlab", "dataset=segmentation_folder", f"dataset.path={root}", "model=unet",
               "trainer.epochs=8", f"trainer.precise_bn={setting}", f"tracking.uri={store}",
               f"tracking.experiment={experiment}", "trainer.plot_model=false", *extra]
    start = time.perf_counter()
    done = subprocess.run(command, check=False, cwd=work, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode:
        sys.exit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    from mlflow.tracking import MlflowClient

    client = MlflowClient(store)
    (found,) = client.search_runs([client.get_experiment_by_name(experiment).experiment_id],
                                  order_by=["attributes.start_time DESC"], max_results=1)
    m = found.data.metrics
    last = {k: client.get_metric_history(found.info.run_id, k)[-1].value for k in ("mean_iou", "val_pixel_accuracy")}
    warned = [line for line in (done.stdout + done.stderr).splitlines() if "closer to chance" in line]
    return {"setting": setting, "test_mean_iou": m.get("test_mean_iou"), "train_mean_iou": last["mean_iou"],
            "val_pixel_accuracy": last["val_pixel_accuracy"], "tag": found.data.tags.get("precise_bn"),
            "seconds": m.get("training_seconds"), "wall": wall, "warning": warned[0] if warned else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, help="where to write the dataset (default: a temporary folder)")
    parser.add_argument("--settings", nargs="+", default=["auto", "false"], help="trainer.precise_bn values")
    parser.add_argument("extra", nargs="*", help="more Hydra overrides for every run (after --)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bn-small-") as tmp:
        root = make_dataset(args.root or Path(tmp) / "ellipses")
        print(f"dataset: {root} ({TRAIN} train + {TEST} test pairs, {SIZE}x{SIZE})")
        for setting in args.settings:
            r = run(root, Path(tmp), setting, args.extra)
            print(f"precise_bn={r['setting']}: test mean IoU {r['test_mean_iou']:.3f}, last epoch's training mean "
                  f"IoU {r['train_mean_iou']:.3f}, last validation pixel accuracy {r['val_pixel_accuracy']:.3f}, tag "
                  f"'{r['tag']}', {r['seconds']:.0f} s training ({r['wall']:.0f} s wall)\n  gap warning: "
                  f"{r['warning'] or 'none'}", flush=True)


if __name__ == "__main__":
    main()

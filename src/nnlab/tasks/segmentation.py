"""Segmentation: a class per pixel. A 1x1-conv softmax head; sparse cross-entropy, Dice, or their sum; pixel
accuracy, mean IoU and Dice while training; per-class IoU, a mask grid and an IoU table for the test set.

Geometric augmentation must move image and mask together, so flips and shifts run in the input pipeline
(`augmentation`), while photometric ones (contrast, brightness) stay image-only layers in the model.
"""

import dataclasses

import numpy as np

from nnlab.errors import NnlabError
from nnlab.tasks import TASKS, Task, log_json

GEOMETRIC = ("flip", "rotation", "zoom", "shift")


@TASKS.register("segmentation")
class Segmentation(Task):
    name = "segmentation"
    monitor = "val_mean_iou"
    headline = "test_mean_iou"
    objective = ("best_val_mean_iou", "test_mean_iou")
    epoch_metrics = ("loss", "pixel_accuracy", "mean_iou", "dice")
    test_columns = ("test_loss", "test_pixel_accuracy", "test_mean_iou", "test_dice")
    losses = ("sparse_categorical_crossentropy", "dice", "ce_dice")

    def head(self, x, num_classes: int):
        import keras

        if len(x.shape) != 4:
            raise NnlabError(f"A segmentation head needs a feature map (batch, height, width, channels); the model "
                             f"gives {tuple(x.shape)}: use model=unet (or another builder that keeps the image size).")
        return keras.layers.Conv2D(num_classes, 1, activation="softmax", dtype="float32", name="head")(x)

    def head_units(self, num_classes: int) -> int:
        return num_classes

    def default_loss(self, num_classes: int) -> str:
        return "sparse_categorical_crossentropy"

    def default_metrics(self, num_classes: int) -> list[str]:
        return ["pixel_accuracy", "mean_iou", "dice"]

    def loss(self, name, options, num_classes: int):
        from nnlab.tasks import losses

        if name in ("dice", "ce_dice"):
            return losses.Dice(num_classes, cross_entropy=name == "ce_dice", **(options or {}))
        if (name or self.default_loss(num_classes)) == "sparse_categorical_crossentropy" and not options:
            return losses.PixelCrossEntropy()
        return super().loss(name, options, num_classes)

    def metric(self, name: str, num_classes: int):
        import keras

        from nnlab.tasks import losses

        builders = {"pixel_accuracy": lambda: keras.metrics.SparseCategoricalAccuracy(name="pixel_accuracy"),
                    "mean_iou": lambda: keras.metrics.MeanIoU(num_classes, sparse_y_pred=False, name="mean_iou"),
                    "dice": lambda: losses.MeanDice(num_classes, sparse_y_pred=False, name="dice")}
        return builders[name]() if name in builders else super().metric(name, num_classes)

    def augmentation(self, augment, seed: int):
        """Flips and shifts move image and mask together in the pipeline; rotation and zoom would need the
        mask resampled the same way, which the pipeline does not do: refused rather than silently image-only.
        albumentations' transforms take image and mask together (the mask resampled nearest-neighbour)."""
        if augment.library == "albumentations":
            from nnlab.data.augment import pipeline_augmentation

            return pipeline_augmentation(augment, masks=True)
        if augment.rotation or augment.zoom:
            raise NnlabError("augment.rotation and augment.zoom are not applied to masks, so segmentation refuses "
                             "them; use augment.flip and augment.shift (they move image and mask together).")
        image_only = dataclasses.replace(augment, flip=None, shift=0.0)
        if not augment.flip and not augment.shift:
            return image_only, None
        return image_only, JointTransform(augment.flip, augment.shift, augment.fill_mode)

    def describe_predictions(self, predictions, class_names, target_scale=None, *, baseline=None, out=None,
                             names=None) -> list[dict]:
        """The predicted class map, written as `out/masks/<name>.png` (class indices, the model's resolution),
        and the share of the pixels of each class."""
        from pathlib import Path

        from PIL import Image

        from nnlab.metrics import metric_safe

        masks = np.asarray(predictions).argmax(-1).astype(np.uint8)
        labels = list(class_names) if class_names else [str(k) for k in range(np.asarray(predictions).shape[-1])]
        folder = Path(out) / "masks" if out is not None else None
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)
        rows = []
        for i, mask in enumerate(masks):
            shares = np.bincount(mask.reshape(-1), minlength=len(labels)) / mask.size
            row: dict = {}
            if folder is not None:
                path = folder / f"{names[i] if names else i}.png"
                Image.fromarray(mask, "L").save(path)
                row["mask"] = str(path)
            row |= {f"share_{metric_safe(n)}": round(float(s), 6) for n, s in zip(labels, shares)}
            top = [k for k in np.argsort(-shares, kind="stable")[:2] if shares[k] > 0]
            rows.append(row | {"_title": ", ".join(f"{labels[k]} {shares[k]:.0%}" for k in top), "_overlay": mask})
        return rows

    def evaluate(self, model, data, predictions, batch_size: int) -> dict[str, float]:
        from nnlab.metrics import metric_safe

        scores = pixel_scores(data.test[1], predictions, len(data.class_names))
        out = {"test_pixel_accuracy": scores["pixel_accuracy"], "test_mean_iou": scores["mean_iou"],
               "test_dice": scores["dice"]}
        for name, iou in zip(data.class_names, scores["iou"]):
            if not np.isnan(iou):
                out[f"test_iou_{metric_safe(name)}"] = float(iou)
        return out

    def log_results(self, sink, data, predictions, title: str) -> dict[str, float]:
        from nnlab import plots

        names = data.class_names
        scores = pixel_scores(data.test[1], predictions, len(names))
        rows = [{"class": n, "iou": none_if_nan(i), "dice": none_if_nan(d), "pixels": int(p)}
                for n, i, d, p in zip(names, scores["iou"], scores["dice_per_class"], scores["support"])]
        sink.text(iou_markdown(rows, title), "iou_per_class.md")
        log_json(sink, rows, "iou_per_class.json")
        shown = slice(0, min(8, len(data.test[0])))
        fig = plots.mask_grid(data.test[0][shown], data.test[1][shown], predictions[shown].argmax(-1), names,
                              f"{title}: image | true mask | predicted (test set)")
        sink.figure(fig, "masks.png")
        plots.close(fig)
        return {}


def pixel_scores(y_true: np.ndarray, probabilities: np.ndarray, num_classes: int) -> dict:
    """Per-class IoU and Dice from the pixel confusion matrix; means over the classes that occur in the truth or
    the prediction (as keras.metrics.MeanIoU counts them)."""
    truth = np.asarray(y_true).reshape(-1).astype(np.int64)
    pred = np.asarray(probabilities).argmax(-1).reshape(-1)
    cm = np.bincount(truth * num_classes + pred, minlength=num_classes**2).reshape(num_classes, num_classes)
    tp, support, predicted = np.diag(cm), cm.sum(1), cm.sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(support + predicted > 0, tp / (support + predicted - tp), np.nan)
        dice = np.where(support + predicted > 0, 2 * tp / (support + predicted), np.nan)
    return {"iou": iou, "dice_per_class": dice, "support": support, "mean_iou": float(np.nanmean(iou)),
            "dice": float(np.nanmean(dice)), "pixel_accuracy": float(tp.sum() / max(cm.sum(), 1))}


def none_if_nan(value: float) -> float | None:
    return None if np.isnan(value) else round(float(value), 4)


def iou_markdown(rows: list[dict], title: str) -> str:
    lines = [f"# Per-class IoU and Dice: {title} (test set)", "",
             "| class | IoU | Dice | pixels |", "|---|---|---|---|"]
    lines += [f"| {r['class']} | {fmt(r['iou'])} | {fmt(r['dice'])} | {r['pixels']:,} |" for r in rows]
    return "\n".join(lines) + "\n"


def fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.4f}"


@dataclasses.dataclass
class JointTransform:
    """The same random flip and shift for an image batch and its mask batch (numpy: every backend)."""

    flip: str | None
    shift: float
    fill_mode: str = "reflect"

    def __call__(self, x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        x, y = np.array(x), np.array(y)
        for i in range(len(x)):
            if self.flip in ("horizontal", "horizontal_and_vertical") and rng.random() < 0.5:
                x[i], y[i] = x[i][:, ::-1], y[i][:, ::-1]
            if self.flip in ("vertical", "horizontal_and_vertical") and rng.random() < 0.5:
                x[i], y[i] = x[i][::-1], y[i][::-1]
            if self.shift:
                dy, dx = (int(round(rng.uniform(-self.shift, self.shift) * n)) for n in x.shape[1:3])
                x[i], y[i] = shifted(x[i], dy, dx, self.fill_mode), shifted(y[i], dy, dx, self.fill_mode)
        return x, y


def shifted(a: np.ndarray, dy: int, dx: int, fill_mode: str) -> np.ndarray:
    """`a` moved by (dy, dx) pixels, the uncovered border filled as Keras's RandomTranslation fills it."""
    mode = {"reflect": "reflect", "nearest": "edge", "wrap": "wrap", "constant": "constant"}.get(fill_mode, "reflect")
    h, w = a.shape[:2]
    pad = [(abs(dy), abs(dy)), (abs(dx), abs(dx))] + [(0, 0)] * (a.ndim - 2)
    padded = np.pad(a, pad, mode=mode)
    top, left = abs(dy) - dy, abs(dx) - dx
    return padded[top:top + h, left:left + w]

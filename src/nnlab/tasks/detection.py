"""Detection: boxes with classes. The model is a whole detector (model=retinanet: KerasHub's RetinaNet, whose
anchors, box matching, focal and Huber losses, box decoding and non-max suppression are the library's); this
module owns what is the task's: targets, the mAP that pycocotools computes, and the figures.

Targets are what the loaders give: per image, rows [x_min, y_min, x_max, y_max, class] in pixels (max
exclusive), padded with rows of -1 to the most boxes of any image. KerasHub wants {"boxes", "labels"}, with -1
labels for the padding: `targets` converts them for fit and evaluate.
"""

import contextlib
import io

import numpy as np

from nnlab.errors import NnlabError
from nnlab.tasks import TASKS, Task, log_json

SHOWN = 8  # test images drawn in detections.png


@TASKS.register("detection")
class Detection(Task):
    name = "detection"
    monitor = "val_map50"
    headline = "test_map50"
    objective = ("best_val_map50", "test_map50")
    epoch_metrics = ("loss", "map50", "map")
    test_columns = ("test_loss", "test_map50", "test_map")
    losses = ("focal",)
    model_modules = ("keras_hub",)  # a saved RetinaNet is KerasHub's class

    def head(self, x, num_classes: int):
        raise NnlabError("A detection head is part of a whole detector: use model=retinanet (boxes need anchors, "
                         "matching and non-max suppression, not a layer on top of another model).")

    def head_units(self, num_classes: int) -> int:
        return num_classes

    def default_loss(self, num_classes: int) -> str:
        return "focal"

    def default_metrics(self, num_classes: int) -> list[str]:
        return []  # mAP needs decoded boxes: map_callback adds val_map50 each epoch

    def loss(self, name, options, num_classes: int):
        """Binary focal cross-entropy on the class logits (summed, as KerasHub's default); trainer.loss_options
        set its `alpha` and `gamma`."""
        import keras

        from nnlab.errors import unknown_name

        if (name or "focal") != "focal":
            raise NnlabError(unknown_name("trainer.loss for detection", name, list(self.losses)))
        try:
            return keras.losses.BinaryFocalCrossentropy(from_logits=True, reduction="sum", **(options or {}))
        except TypeError as err:
            raise NnlabError(f"trainer.loss_options {dict(options)} do not fit the focal loss ({err}); use alpha "
                             "and gamma.") from None

    def compile_args(self, loss: str | None, options, metrics, num_classes: int) -> dict:
        """KerasHub's detector takes a box loss (Huber, summed: the library's default) and a class loss."""
        import keras

        if metrics:
            raise NnlabError(f"trainer.metrics={list(metrics)}: detection logs mAP@0.5 and mAP@[.5:.95] itself "
                             "(val_map50, val_map each epoch, test_map50, test_map); remove trainer.metrics.")
        return {"box_loss": keras.losses.Huber(reduction="sum"),
                "classification_loss": self.loss(loss, options, num_classes), "metrics": None}

    def targets(self, y: np.ndarray):
        return box_targets(y)

    def predict(self, model, x, batch_size: int) -> dict[str, np.ndarray]:
        """Decoded detections (boxes, confidence, labels, num_detections), batch by batch, eagerly: KerasHub's
        non-max suppression needs the batch size when its graph is traced, which `model.predict` (batch
        dimension None) does not give on TensorFlow, and its predict_on_batch unpacks its input wrongly."""
        import keras

        parts = []
        for start in range(0, len(x), batch_size):
            images = keras.ops.convert_to_tensor(np.asarray(x[start:start + batch_size]), "float32")
            if getattr(model, "preprocessor", None) is not None:  # a KerasHub preset's own scaling
                images = model.preprocessor(images)
            # A detector trained in mixed precision outputs bfloat16 or float16; the anchors it decodes against
            # are float32, and KerasHub's decoding mixes the two.
            outputs = keras.tree.map_structure(lambda t: keras.ops.cast(t, "float32"), model(images, training=False))
            found = model.decode_predictions(outputs, images)
            parts.append({k: keras.ops.convert_to_numpy(v) for k, v in found.items()})
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    def epoch_callbacks(self, data, batch_size: int) -> list:
        if data.val is None:
            return []
        return [map_callback(data.val, batch_size, len(data.class_names))]

    def augmentation(self, augment, seed: int):
        """Boxes would have to move with the image; nnlab's image-only layers do not move them, so any
        augmentation is refused rather than silently wrong."""
        if augment.library != "keras":
            raise NnlabError(f"augment.library={augment.library} is not wired to move detection boxes, so detection "
                             "refuses it; remove augment.library and augment.transforms.")
        if any(getattr(augment, k) for k in ("flip", "rotation", "zoom", "shift")):
            raise NnlabError("augment.flip/rotation/zoom/shift do not move the boxes, so detection refuses them; "
                             "set them to null/0 (more training scenes help instead).")
        return augment, None

    def serving_model(self, model):
        """The KerasHub detector itself (its predict decodes boxes; a bare clone would lose that), computing in
        float32: KerasHub's decoding fails on a mixed-precision model's bfloat16 outputs."""
        return float32_copy(model)

    def evaluate(self, model, data, predictions, batch_size: int) -> dict[str, float]:
        stats = coco_map(data.test[1], predictions, len(data.class_names))
        return {"test_map50": stats["map50"], "test_map": stats["map"], "test_map75": stats["map75"]}

    def log_results(self, sink, data, predictions, title: str) -> dict[str, float]:
        from nnlab import plots

        stats = coco_map(data.test[1], predictions, len(data.class_names), per_class=True)
        rows = [{"class": n, "ap50": ap50, "ap": ap, "boxes": int(k)}
                for n, ap50, ap, k in zip(data.class_names, stats["ap50"], stats["ap"], stats["support"])]
        sink.text(ap_markdown(rows, title, stats), "ap_per_class.md")
        log_json(sink, rows, "ap_per_class.json")
        shown = slice(0, min(SHOWN, len(data.test[0])))
        found = [detections(predictions, i) for i in range(shown.stop)]
        fig = plots.box_grid(data.test[0][shown], data.test[1][shown], found, data.class_names,
                             f"{title}: true boxes (white) | detections (test set, score >= 0.5)")
        sink.figure(fig, "detections.png")
        plots.close(fig)
        return {}

    def describe_predictions(self, predictions, class_names, target_scale=None, *, baseline=None, out=None,
                             names=None) -> list[dict]:
        """Per image: how many objects at score >= 0.5, and the classes found most often."""
        rows = []
        for i in range(len(np.asarray(predictions["num_detections"]))):
            labels = detections(predictions, i, min_score=0.5)[2]
            counts = np.bincount(labels, minlength=len(class_names or [])) if len(labels) else np.zeros(0, int)
            top = [k for k in np.argsort(-counts, kind="stable")[:3] if counts[k] > 0]
            names = [class_names[k] if class_names else str(k) for k in top]
            rows.append({"objects": len(labels), "classes": " ".join(f"{n}x{counts[k]}" for n, k in zip(names, top)),
                         "_title": f"{len(labels)} objects"})
        return rows


def float32_copy(model):
    """`model` with every layer computing in float32 (itself when it does already). Mixed precision keeps the
    variables in float32, so the copy takes them as they are."""
    mixed = ("mixed_bfloat16", "mixed_float16")

    def to_float32(node):
        if isinstance(node, dict):
            return {k: to_float32(v) for k, v in node.items()}
        if isinstance(node, list):
            return [to_float32(v) for v in node]
        return "float32" if node in mixed else node

    config = model.get_config()  # the layers' policies are in it (the model's own may say float32)
    plain = to_float32(config)
    if plain == config:
        return model
    from nnlab.layers import float32_policy

    with float32_policy():
        copy = type(model).from_config(plain)
    copy.set_weights(model.get_weights())
    return copy


def box_targets(y: np.ndarray) -> dict[str, np.ndarray]:
    """Padded [x0, y0, x1, y1, class] rows as KerasHub's {"boxes", "labels"} (-1: no box), with one more
    padding row for every image. Why: KerasHub's BoxMatcher, when it matches each true box to its best anchor,
    also matches the extra column it pads its IoU matrix with, to anchor 0, under an index one past the boxes,
    which the gather that follows rejects ("indices[..] = 12 is not in [0, 12)") whenever no image of the batch
    has a padding row to claim anchor 0 first. A padding row's match is harmless: its class is -1 (background)
    and its box has no weight in the loss."""
    y = np.asarray(y, np.float32)
    y = np.concatenate([y, np.full((*y.shape[:-2], 1, 5), -1, np.float32)], axis=-2)
    return {"boxes": np.ascontiguousarray(y[..., :4]), "labels": y[..., 4].astype(np.int32)}


def detections(predictions, i: int, min_score: float = 0.5):
    """Image i's decoded boxes (xyxy pixels), scores and class indices at `min_score` or more."""
    n = int(np.asarray(predictions["num_detections"])[i])
    boxes = np.asarray(predictions["boxes"])[i, :n]
    scores = np.asarray(predictions["confidence"])[i, :n]
    labels = np.asarray(predictions["labels"])[i, :n].astype(int)
    keep = scores >= min_score
    return boxes[keep], scores[keep], labels[keep]


def coco_map(y_true: np.ndarray, predictions, num_classes: int, per_class: bool = False) -> dict:
    """mAP@[.5:.95], mAP@0.5 and mAP@0.75 by pycocotools' COCOeval (every detection the model kept, any score),
    and with `per_class` each class's AP@0.5 and AP. A class with no true box has no AP (None)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images, truth, found = [], [], []
    for i, rows in enumerate(np.asarray(y_true)):
        images.append({"id": i})
        for x0, y0, x1, y1, label in rows[rows[:, 4] >= 0]:
            truth.append({"id": len(truth) + 1, "image_id": i, "category_id": int(label), "iscrowd": 0,
                          "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
                          "area": float((x1 - x0) * (y1 - y0))})
        boxes, scores, labels = detections(predictions, i, min_score=-np.inf)
        found += [{"image_id": i, "category_id": int(k), "score": float(s),
                   "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])]}
                  for b, s, k in zip(boxes, scores, labels)]
    support = np.bincount([t["category_id"] for t in truth], minlength=num_classes)
    empty = {"map": 0.0, "map50": 0.0, "map75": 0.0, "ap": [None] * num_classes, "ap50": [None] * num_classes,
             "support": support}
    if not truth or not found:
        return empty
    with contextlib.redirect_stdout(io.StringIO()):  # COCOeval prints its progress and summary table
        gt = COCO()
        gt.dataset = {"images": images, "annotations": truth, "categories": [{"id": k} for k in range(num_classes)]}
        gt.createIndex()
        ev = COCOeval(gt, gt.loadRes(found), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    out = {"map": float(ev.stats[0]), "map50": float(ev.stats[1]), "map75": float(ev.stats[2]), "support": support}
    if per_class:  # precision: [iou thresholds, recall points, classes, areas, max detections]; -1 = no truth
        precision = ev.eval["precision"][:, :, :, 0, -1]
        out["ap"] = [mean_or_none(precision[:, :, k]) for k in range(num_classes)]
        out["ap50"] = [mean_or_none(precision[0, :, k]) for k in range(num_classes)]
    return out


def mean_or_none(values: np.ndarray) -> float | None:
    values = values[values > -1]
    return round(float(values.mean()), 4) if values.size else None


def ap_markdown(rows: list[dict], title: str, stats: dict) -> str:
    lines = [f"# Average precision per class: {title} (test set)", "",
             (f"mAP@0.5 {stats['map50']:.4f} · mAP@[.5:.95] {stats['map']:.4f} · mAP@0.75 {stats['map75']:.4f} "
              "(pycocotools COCOeval)"), "", "| class | AP@0.5 | AP@[.5:.95] | true boxes |", "|---|---|---|---|"]
    lines += [f"| {r['class']} | {fmt(r['ap50'])} | {fmt(r['ap'])} | {r['boxes']:,} |" for r in rows]
    return "\n".join(lines) + "\n"


def fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.4f}"


def map_callback(val, batch_size: int, num_classes: int):
    """A callback that adds val_map50 and val_map to each epoch's logs, before early stopping and the loggers
    read them (Keras hands every callback the same logs dict, in order)."""
    import keras

    class MeanAveragePrecision(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            predictions = Detection().predict(self.model, val[0], batch_size)
            stats = coco_map(val[1], predictions, num_classes)
            if logs is not None:
                logs["val_map50"], logs["val_map"] = stats["map50"], stats["map"]

    return MeanAveragePrecision()

"""`nnlab detect RUN_OR_PRESET IMAGE`: find objects on a picture with a detector, draw the top boxes, list them.

RUN_OR_PRESET is a finished detection run's id (or runs:/<id>; its classes come from its preprocessing.json), or
a KerasHub detector preset: a name such as `retinanet_resnet50_fpn_coco` (downloaded; online only) or a folder
that `save_to_preset` wrote (offline). A detector is fully convolutional: by default the picture keeps its own
size (sides rounded down to a multiple of 32, the longer one at most --max-side), so objects stay at the scale
they were trained at; `--size H W` resizes instead. `--truth FILE` (a JSON list of [x_min, y_min, x_max, y_max,
class] rows, as the scenes canvases are written) scores the detections: found / present and precision at IoU 0.5.
"""

import argparse
import json
import re
from pathlib import Path

import numpy as np

from nnlab.errors import NnlabError
from nnlab.imports import add_plugin_options

STRIDE = 32  # the pyramid's coarsest stride (RetinaNet's max_level 5): image sides must divide by it
RUN_ID = re.compile(r"(runs:/)?[0-9a-f]{32}(/.*)?")
# torchvision's COCO category names by id (KerasHub's RetinaNet COCO presets were ported from it): 91 slots.
COCO = ("__background__ person bicycle car motorcycle airplane bus train truck boat traffic_light fire_hydrant N/A "
        "stop_sign parking_meter bench bird cat dog horse sheep cow elephant bear zebra giraffe N/A backpack "
        "umbrella N/A N/A handbag tie suitcase frisbee skis snowboard sports_ball kite baseball_bat baseball_glove "
        "skateboard surfboard tennis_racket bottle N/A wine_glass cup fork knife spoon bowl banana apple sandwich "
        "orange broccoli carrot hot_dog pizza donut cake chair couch potted_plant bed N/A dining_table N/A N/A "
        "toilet N/A tv laptop mouse remote keyboard cell_phone microwave oven toaster sink refrigerator N/A book "
        "clock vase scissors teddy_bear hair_drier toothbrush").split()


def load_detector(ref: str, uri: str | None, plugins: list[str] | tuple[str, ...] = (), trust_plugins: bool = False):
    """(model, class names, channels, pixel limit) of a run or a KerasHub preset (Pillow's limit). A run's listed
    plugins are imported only as `plugins` or with `trust_plugins` (nnlab.imports.run_plugins)."""
    from nnlab.data.images import MAX_PIXELS
    from nnlab.imports import import_plugins

    if RUN_ID.fullmatch(ref):

        from nnlab.tracking import store
        from nnlab.use.trained import load_model, load_source

        source = load_source(ref, store.client(uri), plugins, trust_plugins)
        model = load_model(source)
        if not hasattr(model, "decode_predictions"):  # what makes a KerasHub model a detector
            raise NnlabError(f"Run {source.run_id} trained a {source.record.get('task')} model, not a detector; "
                             "pass a detection run (nnlab +experiment=scenes_detector) or a detector preset.")
        limit = getattr(source.config.dataset, "max_image_pixels", None) or MAX_PIXELS
        return model, list(source.record.get("class_names") or []), source.record["input_shape"][-1], limit
    from nnlab.models.retinanet import keras_hub

    import_plugins(list(plugins))
    hub = keras_hub()
    try:
        model = hub.models.ObjectDetector.from_preset(ref)
    except Exception as err:  # noqa: BLE001  (KerasHub raises many kinds: unknown name, offline, bad folder)
        raise NnlabError(f"'{ref}' is neither a run id nor a KerasHub detector preset that loads here "
                         f"({type(err).__name__}: {str(err).strip().splitlines()[0][:200]}); pass a detection "
                         "run's id, a preset folder, or a preset name while online.") from None
    names_file = Path(ref) / "class_names.json"  # nnlab writes it beside a preset it saves
    names = json.loads(names_file.read_text()) if names_file.is_file() else list(COCO[: model.num_classes])
    return model, names, 3, MAX_PIXELS


def fitted_size(width: int, height: int, size: list[int] | None, max_side: int) -> tuple[int, int]:
    """(height, width) the detector sees: --size, else the picture's own size (capped), in multiples of 32."""
    if size:
        h, w = size
    else:
        shrink = min(1.0, max_side / max(width, height))
        h, w = height * shrink, width * shrink
    h, w = max(STRIDE, int(h) // STRIDE * STRIDE), max(STRIDE, int(w) // STRIDE * STRIDE)
    return h, w


def matched(found: np.ndarray, labels: np.ndarray, truth: np.ndarray, iou: float = 0.5) -> np.ndarray:
    """Which detections (in score order) hit a true box of their class not hit before, at IoU >= `iou`."""
    hit, used = np.zeros(len(found), bool), np.zeros(len(truth), bool)
    for i, (box, label) in enumerate(zip(found, labels)):
        x0, y0 = np.maximum(box[0], truth[:, 0]), np.maximum(box[1], truth[:, 1])
        x1, y1 = np.minimum(box[2], truth[:, 2]), np.minimum(box[3], truth[:, 3])
        inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
        area = (box[2] - box[0]) * (box[3] - box[1]) + (truth[:, 2] - truth[:, 0]) * (truth[:, 3] - truth[:, 1])
        overlap = np.where(used | (truth[:, 4] != label), 0, inter / np.maximum(area - inter, 1e-9))
        if len(truth) and overlap.max() >= iou:
            hit[i] = used[overlap.argmax()] = True
    return hit


def detect(ref: str, image: str | Path, top: int = 10, min_score: float = 0.3, out: str | Path | None = None,
           uri: str | None = None, size: list[int] | None = None, max_side: int = 1024,
           truth: str | Path | None = None, plugins: list[str] | tuple[str, ...] = (),
           trust_plugins: bool = False) -> dict:
    """Detect objects on `image`; writes detections.png, .csv and .json to `out` (default detections/<stem>/)
    and returns {"detections": [...], "found", "present", "precision"} (the last three with `truth`)."""
    import pandas as pd

    from nnlab import plots
    from nnlab.data.images import IMAGE_ERRORS, ImageTooLarge, decode_one, image_size
    from nnlab.tasks.detection import Detection, detections

    if top < 1 or not 0 <= min_score <= 1:
        raise NnlabError(f"--top={top} must be 1 or more and --min-score={min_score} within 0-1.")
    path = Path(image)
    if not path.is_file():
        raise NnlabError(f"{path} is not a file; pass the picture to search.")
    model, names, channels, max_pixels = load_detector(ref, uri, plugins, trust_plugins)
    try:
        h, w = fitted_size(*image_size(path, max_pixels), size, max_side)
        pixels = decode_one(path, (h, w), "L" if channels == 1 else "RGB", False, max_pixels)
    except ImageTooLarge as err:
        raise NnlabError(f"{path} is too large to decode: {err.width}x{err.height} pixels, over the limit of "
                         f"{err.limit:,} (the run's dataset.max_image_pixels, else Pillow's); pass a smaller copy "
                         "of the picture.") from None
    except IMAGE_ERRORS as err:
        raise NnlabError(f"{path} is not an image nnlab can read ({type(err).__name__}: {err}); pass a picture "
                         "(JPEG, PNG, …).") from None
    nms = model.prediction_decoder  # KerasHub's NonMaxSuppression, kept as it is but for count and score
    model.prediction_decoder = type(nms)(bounding_box_format=nms.bounding_box_format, from_logits=nms.from_logits,
                                         iou_threshold=nms.iou_threshold, confidence_threshold=min_score,
                                         max_detections=max(top, 100))
    boxes, scores, labels = detections(Detection().predict(model, pixels[None], 1), 0, min_score)
    boxes, scores, labels = np.clip(boxes[:top], 0, [w, h, w, h]), scores[:top], labels[:top]  # on the picture
    label = [names[k] if k < len(names) else str(k) for k in labels]
    rows = [{"class": n, "score": round(float(s), 4), "x_min": round(float(b[0]), 1), "y_min": round(float(b[1]), 1),
             "x_max": round(float(b[2]), 1), "y_max": round(float(b[3]), 1)} for b, s, n in zip(boxes, scores, label)]
    result: dict = {"image": str(path), "size": [h, w], "detections": rows}
    truth_rows = None
    if truth is not None:
        truth_rows = np.asarray(json.loads(Path(truth).read_text()), np.float32).reshape(-1, 5)
        hit = matched(boxes, labels, truth_rows)
        result |= {"present": len(truth_rows), "found": int(hit.sum()),
                   "precision": round(float(hit.mean()), 4) if len(hit) else None}
    out = Path(out) if out is not None else Path("detections") / path.stem
    out.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows, columns=["class", "score", "x_min", "y_min", "x_max", "y_max"]).to_csv(
        out / "detections.csv", index=False)
    (out / "detections.json").write_text(json.dumps(result, indent=2))
    fig = plots.boxes_figure(pixels, boxes, labels, names, scores, None if truth_rows is None else truth_rows[:, :4],
                             f"{path.name}: top {len(rows)} detections (score >= {min_score})")
    fig.savefig(out / "detections.png", dpi=100)
    plots.close(fig)
    return result


def write_scene(out: Path, items: int, size: list[int]) -> tuple[str, str]:
    """A canvas of held-out digits (never seen in training) and its true boxes: out/scene.png, out/scene.json."""
    from PIL import Image

    from nnlab.data.scenes import held_out_canvas

    if items < 1:
        raise NnlabError(f"--scene {items}: give the number of items to paint, 1 or more.")
    image, rows, _ = held_out_canvas(seed=0, items=items, canvas_size=size)
    out.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(out / "scene.png")
    (out / "scene.json").write_text(json.dumps(rows))
    print(f"nnlab: painted {len(rows)} of {items} items on a {size[0]}x{size[1]} canvas: {out / 'scene.png'}")
    return str(out / "scene.png"), str(out / "scene.json")


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="nnlab detect", description="Find objects on a picture with a detection "
                                     "run's model or a KerasHub detector preset; draw and list the top boxes.")
    parser.add_argument("ref", help="a detection run's id (runs:/<id>), or a KerasHub preset name or folder")
    parser.add_argument("image", nargs="?", help="the picture (or --scene N)")
    parser.add_argument("--top", type=int, default=10, help="boxes to keep, best first (default 10)")
    parser.add_argument("--min-score", type=float, default=0.3, help="lowest score kept (default 0.3)")
    parser.add_argument("--out", help="output folder (default: detections/<image stem>)")
    parser.add_argument("--uri", help="MLflow store (default: $MLFLOW_TRACKING_URI, else ./mlflow.db)")
    parser.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), help="resize the picture to H x W")
    parser.add_argument("--max-side", type=int, default=1024, help="without --size: cap the longer side")
    parser.add_argument("--truth", help="JSON list of true [x_min, y_min, x_max, y_max, class] rows: score them")
    parser.add_argument("--scene", type=int, metavar="N", help="instead of IMAGE: a new canvas of N held-out scenes "
                        "items (digits) at --size (default 352 352), written as scene.png with its boxes, and scored")
    add_plugin_options(parser)
    args = parser.parse_args(argv)
    if (args.image is None) == (args.scene is None):
        parser.error("give either IMAGE or --scene N")
    out = Path(args.out) if args.out else Path("detections") / (Path(args.image).stem if args.image else
                                                                f"scene{args.scene}")
    if args.scene is not None:
        args.image, args.truth = write_scene(out, args.scene, args.size or [352, 352])
    result = detect(args.ref, args.image, args.top, args.min_score, out, args.uri, args.size, args.max_side,
                    args.truth, args.plugins, args.trust_plugins)
    for row in result["detections"][:20]:
        print(f"  {row['class']:>16} {row['score']:.3f}  [{row['x_min']:.0f}, {row['y_min']:.0f}, "
              f"{row['x_max']:.0f}, {row['y_max']:.0f}]")
    scored = (f"; found {result['found']} of {result['present']} true objects, precision {result['precision']}"
              if "present" in result else "")
    print(f"\nnnlab: {len(result['detections'])} objects on {args.image}{scored}; written to {out}/ "
          "(detections.png, detections.csv, detections.json)")

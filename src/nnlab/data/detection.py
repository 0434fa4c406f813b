"""`detection_folder`: your own pictures with boxes, in either common annotation format.

    <path>/images/*.jpg|png + <path>/annotations.json        COCO: images, annotations (bbox x, y, w, h), categories
    <path>/images/*.jpg|png + <path>/annotations/<stem>.xml  Pascal VOC: one file per image, <object><name> + <bndbox>
    (or both under <path>/train/ and <path>/test/)

Images are decoded once and cached like image folders, resized to `image_size`; their boxes are scaled with them
and become rows [x_min, y_min, x_max, y_max, class], padded with -1 rows (the detection task's targets). Classes
are the COCO categories in id order, or the VOC names sorted (or `classes`, in that order). A box of an unknown
class, an empty box, or an image whose file cannot be read is skipped and listed in `info["problems"]`.
"""

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
from PIL import Image

from nnlab.data import DATASETS, Data, holdout, split_train
from nnlab.data.folders import UNREADABLE, limit_bad_share, require_dir, seeded_subset
from nnlab.data.image_cache import cached_decode
from nnlab.data.images import is_image
from nnlab.errors import DataNotFoundError, NnlabError

LAYOUT = ("<path>/images/ with <path>/annotations.json (COCO) or <path>/annotations/<image stem>.xml (Pascal VOC), "
          "or both under <path>/train/ and <path>/test/")
ROTATED = (5, 6, 7, 8)  # EXIF orientations that swap width and height (decoding turns the photo upright)
Boxes = dict[Path, list[tuple[float, float, float, float, str]]]  # image -> (x0, y0, x1, y1, class name)


def read_coco(folder: Path, problems: list[str]) -> tuple[Boxes, dict[Path, tuple[int, int]], list[str]]:
    """Boxes per image file, the sizes the annotation gives, and the category names in id order."""
    doc = json.loads((folder / "annotations.json").read_text())
    names = {c["id"]: str(c["name"]) for c in sorted(doc.get("categories", []), key=lambda c: c["id"])}
    files = {im["id"]: folder / "images" / im["file_name"] for im in doc.get("images", [])}
    sizes = {files[im["id"]]: (im["width"], im["height"]) for im in doc.get("images", []) if "width" in im}
    boxes: Boxes = {f: [] for f in files.values()}
    for ann in doc.get("annotations", []):
        if ann.get("image_id") not in files or ann.get("category_id") not in names:
            problems.append(f"annotation {ann.get('id')} names an unknown image or category; skipped")
            continue
        x, y, w, h = (float(v) for v in ann["bbox"])
        boxes[files[ann["image_id"]]].append((x, y, x + w, y + h, names[ann["category_id"]]))
    return boxes, sizes, list(names.values())


def read_voc(folder: Path, problems: list[str]) -> tuple[Boxes, dict[Path, tuple[int, int]], list[str]]:
    boxes: Boxes = {}
    sizes: dict[Path, tuple[int, int]] = {}
    for xml in sorted((folder / "annotations").glob("*.xml")):
        try:
            root = ET.parse(xml).getroot()
        except ET.ParseError as err:
            problems.append(f"unreadable annotation: {xml} ({err})")
            continue
        name = root.findtext("filename") or xml.stem
        image = folder / "images" / name
        if not image.exists():  # VOC files often name the image without its folder, or not at all
            image = next((p for p in sorted((folder / "images").glob(f"{xml.stem}.*")) if is_image(p)), image)
        size = root.find("size")
        if size is not None and size.findtext("width"):
            sizes[image] = (int(float(size.findtext("width"))), int(float(size.findtext("height"))))
        boxes[image] = [(*(float(obj.find("bndbox").findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")),
                         obj.findtext("name").strip()) for obj in root.iter("object")]
    return boxes, sizes, sorted({b[4] for rows in boxes.values() for b in rows})


def read_folder(folder: Path, problems: list[str]):
    if (folder / "annotations.json").is_file():
        return read_coco(folder, problems)
    if (folder / "annotations").is_dir():
        return read_voc(folder, problems)
    raise DataNotFoundError(f"{folder} has no annotations.json (COCO) and no annotations/ folder (VOC); expected "
                            f"{LAYOUT}.")


def image_size_of(path: Path, given: tuple[int, int] | None) -> tuple[int, int]:
    """(width, height) as the boxes see the picture: the annotation's, else the file's, upright."""
    if given:
        return given
    with Image.open(path) as im:
        w, h = im.size
        return (h, w) if im.getexif().get(0x0112) in ROTATED else (w, h)


def box_rows(items, size: tuple[int, int], target: tuple[int, int], classes: list[str], where: Path,
             problems: list[str]) -> np.ndarray:
    """One image's boxes scaled to the resized picture, as [x0, y0, x1, y1, class] rows."""
    sx, sy = target[1] / size[0], target[0] / size[1]
    rows = []
    for x0, y0, x1, y1, name in items:
        if name not in classes:
            problems.append(f"box of class {name!r} in {where}: not in dataset.classes; skipped")
        elif x1 <= x0 or y1 <= y0:
            problems.append(f"empty box {[x0, y0, x1, y1]} in {where}; skipped")
        else:
            rows.append([max(x0, 0) * sx, max(y0, 0) * sy, min(x1, size[0]) * sx, min(y1, size[1]) * sy,
                         classes.index(name)])
    return np.asarray(rows, np.float32).reshape(-1, 5)


def decode(files: list[Path], boxes: Boxes, sizes: dict, classes: list[str], image_size: tuple[int, int],
           settings: dict, problems: list[str]) -> tuple[np.ndarray, list[np.ndarray]]:
    decoded = cached_decode(files, image_size, **settings)
    problems += [f"{UNREADABLE}{f} ({reason})" for f, reason in decoded.bad]
    rows = [box_rows(boxes[files[i]], image_size_of(files[i], sizes.get(files[i])), image_size, classes, files[i],
                     problems) for i in decoded.good]
    return np.asarray(decoded.images), rows


def padded(rows: list[np.ndarray], width: int) -> np.ndarray:
    out = np.full((len(rows), max(width, 1), 5), -1, np.float32)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return out


@DATASETS.register("detection_folder")
def detection_folder(
    *, seed: int, path: str | None, limit: int | None, val_split: float, test_split: float,
    classes: list[str] | None, image_size: list[int], color_mode: str, max_bad_fraction: float,
    cache_dir: str | None, max_image_pixels: int,
) -> Data:
    """Images with COCO or VOC boxes, under `path/train` and `path/test` or directly under `path` with a seeded
    `test_split` held out."""
    root = require_dir(path, LAYOUT)
    train_root = root / "train" if (root / "train" / "images").is_dir() else root
    test_root = root / "test" if train_root != root and (root / "test" / "images").is_dir() else None
    problems: list[str] = []
    boxes, sizes, names = read_folder(train_root, problems)
    if test_root:
        more, more_sizes, more_names = read_folder(test_root, problems)
        names += [n for n in more_names if n not in names]
        test_files = [f for f in more if f.exists()]
        boxes, sizes = boxes | more, sizes | more_sizes
    names = list(classes) if classes else names
    files = [f for f in boxes if f.exists() and f not in (test_files if test_root else [])]
    problems += [f"annotated image not found: {f}" for f in boxes if not f.exists()]
    if len(files) + (len(test_files) if test_root else 0) < 2 or not names:
        raise DataNotFoundError(f"Found {len(files)} annotated images and {len(names)} classes under {root}; a "
                                f"detection set needs at least 2 images with boxes, laid out as {LAYOUT}.")
    if not test_root:
        index = np.arange(len(files))
        (pool, _), (test, _) = holdout(index, index, test_split=test_split, seed=seed, stratify=False)
        files, test_files = [files[i] for i in np.sort(pool)], [files[i] for i in np.sort(test)]
    files = [files[i] for i in seeded_subset(np.zeros(len(files)), limit, seed)]
    size = (int(image_size[0]), int(image_size[1]))
    settings = {"color_mode": color_mode, "cache_dir": cache_dir, "max_pixels": max_image_pixels}
    x, rows = decode(files, boxes, sizes, names, size, settings, problems)
    x_test, test_rows = decode(test_files, boxes, sizes, names, size, settings, problems)
    limit_bad_share(problems, len(files) + len(test_files), max_bad_fraction, root, "images and boxes",
                    "cannot be read or do not fit the classes")
    width = max(len(r) for r in rows + test_rows)
    if width == 0:
        raise NnlabError(f"No box under {root} belongs to dataset.classes={names}; fix the classes or the "
                         "annotations.")
    train, val = split_train(x, padded(rows, width), val_split=val_split, limit=None, seed=seed, stratify=False)
    info = {"boxes": int(sum(len(r) for r in rows + test_rows)), "problems": problems}
    return Data(train, val, (x_test, padded(test_rows, width)), "detection", names, info=info,
                preprocessing={"pixel_scale": 1.0})  # detectors take raw 0-255 pixels

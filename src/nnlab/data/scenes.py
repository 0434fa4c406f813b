"""`scenes`: a built-in, offline segmentation (or detection) set: items pasted over procedural backgrounds.

Each canvas gets a smooth colour gradient, low-frequency blotches and sometimes stripes (or one flat colour),
then a few items, scaled up with bilinear interpolation and painted in a colour that contrasts with the
background under them. Because the generator paints the pixels itself, the masks and boxes are exact.

Test canvases are held-out scenes: the source items are split first (digits: a seeded stratified 20%;
Fashion-MNIST: its own t10k files), and the test canvases are drawn from the test items with their own random
stream, so `limit` (training canvases only) never changes them.
"""

from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from nnlab.data import DATASETS, Data, split_train
from nnlab.data.idx import FASHION_CLASSES, FILES, find_file, read_idx
from nnlab.errors import DataNotFoundError, NnlabError

ITEM_TEST_SHARE = 0.2  # digits items reserved for the test canvases
TRIES = 30  # random placements tried per item before it is left out (a crowded canvas gets fewer items)
Pool = tuple[np.ndarray, np.ndarray]  # items (n, h, w) float32 in [0, 1], labels (n,)


def digit_pools(seed: int) -> tuple[Pool, Pool, list[str]]:
    bunch = load_digits()
    items, labels = (bunch.images / 16.0).astype(np.float32), bunch.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(items, labels, test_size=ITEM_TEST_SHARE, random_state=seed,
                                              stratify=labels)
    return (x_tr, y_tr), (x_te, y_te), [str(k) for k in range(10)]


def fashion_pools(path: str | None) -> tuple[Pool, Pool, list[str]]:
    if path is None:
        raise NnlabError("dataset.path is not set for dataset.source=fashion_mnist; set it (or NNLAB_DATA_DIR) to "
                         "the folder holding the four Fashion-MNIST IDX files.")
    root = Path(path).expanduser()
    found = {key: find_file(stem, [root]) for key, stem in FILES.items()}
    missing = [f"{FILES[key]}.gz" for key, f in found.items() if f is None]
    if missing:
        raise DataNotFoundError(f"Fashion-MNIST files for dataset.source=fashion_mnist are missing from {root}: "
                                f"put {', '.join(missing)} there, or point dataset.path at the folder that has them.")
    arrays = {key: read_idx(f) for key, f in found.items()}
    pool = {split: (arrays[f"x_{split}"].astype(np.float32) / 255, arrays[f"y_{split}"].astype(np.int64))
            for split in ("train", "test")}
    return pool["train"], pool["test"], list(FASHION_CLASSES)


def pick_classes(pool: Pool, classes: list[int] | None, names: list[str]) -> tuple[Pool, list[int]]:
    """Keep the items of the chosen classes; their masks are labelled 1..len(classes) in that order."""
    chosen = list(range(len(names))) if classes is None else [int(k) for k in classes]
    bad = [k for k in chosen if not 0 <= k < len(names)]
    if bad or not chosen or len(set(chosen)) != len(chosen):
        raise NnlabError(f"dataset.classes={classes} must list distinct class indices 0-{len(names) - 1} of the "
                         "source's classes; fix it, or set it to null for all of them.")
    keep = np.isin(pool[1], chosen)
    label_of = np.zeros(len(names), np.int64)
    label_of[chosen] = np.arange(1, len(chosen) + 1)
    return (pool[0][keep], label_of[pool[1][keep]]), chosen


def blur_grid(rng: np.random.Generator, shape: tuple[int, int], cells: int, channels: int) -> np.ndarray:
    """Random values on a coarse grid, bilinearly upsampled: smooth blotches with no visible grid."""
    coarse = rng.random((cells, cells, channels)).astype(np.float32)
    rows = [Image.fromarray(coarse[..., c], "F").resize(shape[::-1], Image.Resampling.BILINEAR)
            for c in range(channels)]
    return np.stack([np.asarray(r) for r in rows], axis=-1)


def background(rng: np.random.Generator, shape: tuple[int, int], texture: bool) -> np.ndarray:
    """(H, W, 3) float32 in [0, 1]: a gradient + blotches + (half the time) stripes, or one flat colour."""
    if not texture:
        return np.broadcast_to(rng.random(3).astype(np.float32), (*shape, 3)).copy()
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(angle) * xx / w + np.sin(angle) * yy / h)[..., None]
    ramp = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1e-6)
    start, end = rng.random(3).astype(np.float32), rng.random(3).astype(np.float32)
    canvas = start + (end - start) * ramp + 0.25 * (blur_grid(rng, shape, 4, 3) - 0.5)
    if rng.random() < 0.5:
        turn, period = rng.uniform(0, np.pi), rng.uniform(4, 12)
        phase = (np.cos(turn) * xx + np.sin(turn) * yy) * 2 * np.pi / period
        canvas += (0.08 * np.sin(phase + rng.uniform(0, 2 * np.pi)))[..., None]
    return np.clip(canvas, 0, 1)


def contrasting_colour(rng: np.random.Generator, under: np.ndarray) -> np.ndarray:
    """Bright on a dark patch, dark on a bright one: the item's luminance differs from its background's."""
    luma = float(under.reshape(-1, 3).mean(axis=0) @ np.array([0.299, 0.587, 0.114]))
    if luma < 0.5:
        return rng.uniform(min(luma + 0.35, 0.9), 1.0, 3).astype(np.float32)
    return rng.uniform(0.0, max(luma - 0.35, 0.1), 3).astype(np.float32)


def scaled_item(item: np.ndarray, side: int) -> tuple[np.ndarray, np.ndarray]:
    """The item at side x side (bilinear), its intensity normalised to [0, 1], and its mask (above half max)."""
    big = np.asarray(Image.fromarray(item, "F").resize((side, side), Image.Resampling.BILINEAR))
    big = big / max(float(big.max()), 1e-6)
    return big, big > 0.5


def place(rng: np.random.Generator, shape: tuple[int, int], side: int, mask: np.ndarray, boxes: list,
          max_overlap: float) -> tuple[int, int, list[int]] | None:
    """A random top-left corner where the item's tight box covers at most `max_overlap` of each earlier box."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    for _ in range(TRIES):
        top, left = int(rng.integers(0, shape[0] - side + 1)), int(rng.integers(0, shape[1] - side + 1))
        box = [left + cols[0], top + rows[0], left + cols[-1] + 1, top + rows[-1] + 1]
        if all(covered(box, other) <= max_overlap for other in boxes):
            return top, left, box
    return None


def covered(box: list[int], other: list[int]) -> float:
    """Share of `other`'s area under `box` (boxes are [x_min, y_min, x_max, y_max], max exclusive)."""
    w = min(box[2], other[2]) - max(box[0], other[0])
    h = min(box[3], other[3]) - max(box[1], other[1])
    return max(w, 0) * max(h, 0) / ((other[2] - other[0]) * (other[3] - other[1]))


def paint_canvas(rng: np.random.Generator, pool: Pool, shape: tuple[int, int], opts: dict):
    """One canvas: (H, W, 3) float image, (H, W) class map, and the items' [x0, y0, x1, y1, class-1] rows."""
    image = background(rng, shape, opts["texture"])
    classes = np.zeros(shape, np.uint8)
    instances = np.zeros(shape, np.uint8)  # which item owns each pixel, for boxes around what stays visible
    boxes, labels = [], []
    for _ in range(int(rng.integers(opts["items"][0], opts["items"][1] + 1))):
        k = int(rng.integers(len(pool[1])))
        side = min(int(rng.integers(opts["item_size"][0], opts["item_size"][1] + 1)), *shape)
        intensity, mask = scaled_item(pool[0][k], side)
        spot = place(rng, shape, side, mask, boxes, opts["max_overlap"]) if mask.any() else None
        if spot is None:
            continue
        top, left, box = spot
        window = (slice(top, top + side), slice(left, left + side))
        colour = contrasting_colour(rng, image[window][mask])
        # Shading keeps the item's own strokes/folds visible inside its silhouette, within 75-100% of colour.
        image[window][mask] = colour * (0.5 + 0.5 * intensity[mask])[:, None]
        classes[window][mask] = pool[1][k]
        instances[window][mask] = len(boxes) + 1
        boxes.append(box)
        labels.append(int(pool[1][k]))
    rows = []
    for i, label in enumerate(labels, start=1):
        ys, xs = np.nonzero(instances == i)
        if len(ys):  # an item hidden entirely by later ones (max_overlap=1) has no box
            rows.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1, label - 1])
    if opts["noise"]:
        image += rng.normal(0, opts["noise"], image.shape).astype(np.float32)
    return image, classes, rows


def generate(rng: np.random.Generator, pool: Pool, n: int, opts: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    shape = tuple(int(s) for s in opts["canvas_size"])
    x = np.empty((n, *shape, 3), np.uint8)
    masks = np.empty((n, *shape), np.uint8)
    boxes = np.full((n, int(opts["items"][1]), 5), -1, np.float32)  # rows of -1 pad canvases with fewer items
    for i in range(n):
        image, masks[i], rows = paint_canvas(rng, pool, shape, opts)
        x[i] = (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)
        if rows:
            boxes[i, : len(rows)] = rows
    return x, masks, boxes


def check_options(opts: dict, source: str, target: str) -> None:
    lo, hi = (int(v) for v in opts["items"])
    small, big = (int(v) for v in opts["item_size"])
    problems = [
        (source not in ("digits", "fashion_mnist"), f"dataset.source={source!r} must be digits or fashion_mnist"),
        (target not in ("masks", "boxes"), f"dataset.target={target!r} must be masks or boxes"),
        (not 0 <= lo <= hi or hi < 1, f"dataset.items={list(opts['items'])} must be [min, max] with 0 <= min <= max"),
        (not 2 <= small <= big, f"dataset.item_size={list(opts['item_size'])} must be [min, max] with 2 <= min <= max"),
        (len(opts["canvas_size"]) != 2 or min(opts["canvas_size"]) < 2,
         f"dataset.canvas_size={list(opts['canvas_size'])} must be [height, width] of at least 2 pixels"),
        (not 0 <= opts["max_overlap"] <= 1, f"dataset.max_overlap={opts['max_overlap']} must be within 0-1"),
    ]
    for bad, message in problems:
        if bad:
            raise NnlabError(f"{message}; fix it in the dataset config.")


@DATASETS.register("scenes")
def scenes(
    *, seed: int, path: str | None, limit: int | None, val_split: float, test_split: float, count: int,
    source: str, canvas_size: list[int], items: list[int], item_size: list[int], classes: list[int] | None,
    max_overlap: float, noise: float, texture: bool, target: str,
) -> Data:
    """`count` canvases of `canvas_size` with `items` items each; y is a class map per pixel (target=masks)
    or padded [x_min, y_min, x_max, y_max, class] rows (target=boxes: task 'detection', max exclusive)."""
    opts = {"canvas_size": canvas_size, "items": items, "item_size": item_size, "max_overlap": float(max_overlap),
            "noise": float(noise), "texture": bool(texture)}
    check_options(opts, source, target)
    n_test = int(round(count * test_split))
    n_pool = int(count) - n_test
    if n_test < 1 or n_pool < 2:
        raise NnlabError(f"dataset.count={count} with dataset.test_split={test_split} leaves {n_pool} training and "
                         f"{n_test} test canvases; raise dataset.count or change dataset.test_split.")
    train_items, test_items, names = digit_pools(seed) if source == "digits" else fashion_pools(path)
    train_items, chosen = pick_classes(train_items, classes, names)
    test_items, _ = pick_classes(test_items, classes, names)
    n_train = min(n_pool, max(int(limit), 2)) if limit is not None else n_pool
    # Separate streams: the test canvases do not depend on how many training canvases were drawn.
    train_rng, test_rng = (np.random.default_rng([seed, stream]) for stream in (0, 1))
    x, masks, boxes = generate(train_rng, train_items, n_train, opts)
    x_test, masks_test, boxes_test = generate(test_rng, test_items, n_test, opts)
    item_names = [names[k] for k in chosen]
    info = {"train_items": len(train_items[1]), "test_items": len(test_items[1]), "problems": []}
    if target == "boxes":
        train, val = split_train(x, boxes, val_split=val_split, limit=None, seed=seed, stratify=False)
        return Data(train, val, (x_test, boxes_test), "detection", item_names, info=info,
                    preprocessing={"pixel_scale": 1.0})  # detectors take raw 0-255 pixels
    train, val = split_train(x, masks, val_split=val_split, limit=None, seed=seed, stratify=False)
    return Data(train, val, (x_test, masks_test), "segmentation", ["background", *item_names], rescale=1 / 255,
                info=info)


def held_out_canvas(*, seed: int, items: int, canvas_size: list[int], item_size: list[int] = (16, 28),
                source: str = "digits", path: str | None = None, max_overlap: float = 0.0):
    """One canvas of up to `items` held-out test items (the lab's "find 100 objects"), with its box rows:
    (H, W, 3) uint8, [[x_min, y_min, x_max, y_max, class], ...]. Fewer fit when the canvas is too small."""
    _, test_items, names = digit_pools(seed) if source == "digits" else fashion_pools(path)
    test_items, _ = pick_classes(test_items, None, names)  # labels 1..K, as paint_canvas expects
    opts = {"canvas_size": list(canvas_size), "items": [items, items], "item_size": list(item_size),
            "max_overlap": max_overlap, "noise": 0.03, "texture": True}
    check_options(opts, source, "boxes")
    image, _, rows = paint_canvas(np.random.default_rng([seed, 2]), test_items, tuple(canvas_size), opts)
    return (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8), [[int(v) for v in r] for r in rows], names


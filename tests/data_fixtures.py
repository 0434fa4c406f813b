"""Tiny datasets in the layouts users download, generated on the fly (learnable, and broken on request)."""

import pickle
from pathlib import Path

import numpy as np
from PIL import Image

# One clearly different colour per class, so a few epochs of a tiny net can tell them apart.
PALETTE = [(230, 30, 30), (30, 200, 30), (30, 30, 230), (230, 230, 30), (30, 230, 230), (230, 30, 230)]


def class_image(k: int, size: tuple[int, int], rng, mode: str = "RGB") -> Image.Image:
    w, h = size
    base = np.array(PALETTE[k % len(PALETTE)], np.float32)
    pixels = np.clip(base + rng.normal(0, 20, (h, w, 3)), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels, "RGB").convert(mode)


def make_image_tree(root: Path, classes: list[str], per_class: int, size=(12, 12), fmt: str = "png",
                    seed: int = 0, modes: tuple[str, ...] = ("RGB",)) -> Path:
    """root/<class>/<i>.<fmt>; `modes` cycle through the files (RGB, L, RGBA, P…) to mix colour modes."""
    rng = np.random.default_rng(seed)
    for k, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            mode = modes[i % len(modes)]
            class_image(k, size, rng, mode).save(root / name / f"{i:04d}.{fmt}")
    return root


def make_split_tree(root: Path, classes: list[str], train: int, test: int, train_dir: str = "train",
                    test_dir: str = "test", **kw) -> Path:
    make_image_tree(root / train_dir, classes, train, seed=1, **kw)
    make_image_tree(root / test_dir, classes, test, seed=2, **kw)
    return root


def corrupt(path: Path, how: str = "garbage") -> Path:
    """Break an image file: random bytes, a truncated JPEG/PNG, or an empty file."""
    if how == "garbage":
        path.write_bytes(b"this is not an image at all")
    elif how == "truncated":
        path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 3])
    else:
        path.write_bytes(b"")
    return path


def make_cifar_pickles(root: Path, per_batch: int = 20, batches: int = 2, seed: int = 0) -> Path:
    """cifar-10-batches-py/ with data_batch_1..N and test_batch in the official dict-of-bytes format."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    names = [f"data_batch_{i}" for i in range(1, batches + 1)] + ["test_batch"]
    for name in names:
        labels = [int(v) for v in np.arange(per_batch) % 10]
        images = np.stack([np.asarray(class_image(k, (32, 32), rng)) for k in labels])
        data = images.transpose(0, 3, 1, 2).reshape(per_batch, -1)  # rows of R plane, G plane, B plane
        with open(folder / name, "wb") as f:
            pickle.dump({b"data": data, b"labels": labels, b"batch_label": name.encode()}, f)
    return root


def make_faces(root: Path, n: int = 40, size=(24, 24), seed: int = 0) -> Path:
    """labels.csv (file_name,real_age) + final_files/: brightness grows with age."""
    rng = np.random.default_rng(seed)
    (root / "final_files").mkdir(parents=True)
    rows = ["file_name,real_age"]
    for i in range(n):
        age = int(rng.integers(1, 90))
        pixels = np.full((*size, 3), int(age * 2.5), np.uint8)
        Image.fromarray(pixels).save(root / "final_files" / f"{i:06d}.jpg")
        rows.append(f"{i:06d}.jpg,{age}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root


def make_boston(path: Path, rows: int = 506, seed: int = 0, sep: str = " ") -> Path:
    """14 numeric columns, MEDV a noisy linear function of the 13 features, UCI-style whitespace."""
    rng = np.random.default_rng(seed)
    x = rng.normal(10, 5, (rows, 13))
    y = 22 + x[:, :3] @ np.array([0.8, -0.5, 0.3]) + rng.normal(0, 0.5, rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savetxt(path, np.column_stack([x, y]), fmt="%.4f", delimiter=sep)
    return path


def make_airline(path: Path, months: int = 144) -> Path:
    """Month,Passengers with trend and a 12-month season, like the Box & Jenkins series."""
    t = np.arange(months)
    values = (120 + 2.5 * t + 30 * np.sin(2 * np.pi * t / 12)).round().astype(int)
    lines = ['"Month","Passengers"'] + [f'"{1949 + m // 12}-{m % 12 + 1:02d}",{v}' for m, v in zip(t, values)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def segmentation_pair(rng, size, classes: int) -> tuple[np.ndarray, np.ndarray]:
    """A mask with one random rectangle per foreground class, and an image coloured by class (PALETTE[k])."""
    h, w = size
    mask = np.zeros((h, w), np.uint8)
    for k in range(1, classes):
        top, left = rng.integers(0, h // 2), rng.integers(0, w // 2)
        mask[top : top + rng.integers(2, h // 2 + 1), left : left + rng.integers(2, w // 2 + 1)] = k
    colours = np.array(PALETTE, np.float32)[mask % len(PALETTE)]
    pixels = np.clip(colours + rng.normal(0, 8, colours.shape), 0, 255).astype(np.uint8)
    return pixels, mask


def write_segmentation_pairs(folder: Path, n: int, size, classes: int, rng, binary: bool, mask_mode: str,
                             fmt: str) -> None:
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        pixels, mask = segmentation_pair(rng, size, 2 if binary else classes)
        Image.fromarray(pixels, "RGB").save(folder / "images" / f"{i:04d}.{fmt}")
        mask_image = Image.fromarray(mask * 255 if binary else mask, "L")
        if mask_mode == "P":  # palette colours unlike the indices: a loader must read indices, not colours
            mask_image = mask_image.convert("P")
            mask_image.putpalette([v for k in range(256) for v in PALETTE[k % len(PALETTE)]])
        mask_image.save(folder / "masks" / f"{i:04d}.png")


def make_segmentation_folder(root: Path, n: int = 12, size=(16, 16), classes: int = 3,
                             split: tuple[int, int] | None = None, binary: bool = False, mask_mode: str = "L",
                             fmt: str = "png", seed: int = 0) -> Path:
    """root/images + root/masks (or root/train/… and root/test/… with `split` = (n_train, n_test)); masks hold
    class indices 0..classes-1, or 0/255 with `binary`; image pixels have class k's PALETTE colour."""
    rng = np.random.default_rng(seed)
    if split is None:
        write_segmentation_pairs(root, n, size, classes, rng, binary, mask_mode, fmt)
    else:
        for name, count in zip(("train", "test"), split):
            write_segmentation_pairs(root / name, count, size, classes, rng, binary, mask_mode, fmt)
    return root


def make_oxford_pets(root: Path, n: int = 10, size=(20, 24), seed: int = 0) -> Path:
    """images/<Breed>_<i>.jpg + annotations/trimaps/<same>.png (1 pet, 2 background, 3 border), plus the macOS
    `._*` metadata files and the stray .mat files the real archives contain."""
    rng = np.random.default_rng(seed)
    images, trimaps = root / "images", root / "annotations" / "trimaps"
    images.mkdir(parents=True)
    trimaps.mkdir(parents=True)
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w]
    for i in range(n):
        cy, cx, r = rng.integers(h // 3, 2 * h // 3), rng.integers(w // 3, 2 * w // 3), rng.integers(4, h // 3 + 1)
        distance = np.hypot(yy - cy, xx - cx)
        trimap = np.where(distance < r, 1, np.where(distance < r + 2, 3, 2)).astype(np.uint8)
        pixels = np.where((trimap == 1)[..., None], np.uint8([240, 200, 40]), np.uint8([20, 40, 160]))
        name = f"{['Abyssinian', 'beagle'][i % 2]}_{i}"
        Image.fromarray(pixels.astype(np.uint8), "RGB").save(images / f"{name}.jpg", quality=95)
        Image.fromarray(trimap, "L").save(trimaps / f"{name}.png")
        (trimaps / f"._{name}.png").write_bytes(b"\x00\x05\x16\x07 macOS metadata, not a PNG")
    (images / "._Abyssinian_0.jpg").write_bytes(b"\x00\x05\x16\x07 macOS metadata")
    (images / "Abyssinian_101.mat").write_bytes(b"MATLAB 5.0 MAT-file")
    return root

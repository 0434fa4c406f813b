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

"""`nnlab course prepare NAME DEST`: nnlab's copy of a dataset, written in the platform's layout, so a student can
rehearse an exercise offline. Where the copy is comes from the dataset's preset (`conf/dataset/NAME.yaml`:
`$NNLAB_DATA_DIR/<folder>`), or `--from`; it is read with nnlab's own loaders and listings.

fashion_mnist, mnist -> train_features.npy (uint8, n x 28 x 28), train_target.npy, test_features.npy,
test_target.npy; fruits -> DEST/<class>/<photo> (the copy's training and test photos together: the platform's
folder is one pool that scripts split); faces -> DEST/labels.csv (file_name,real_age) + DEST/final_files/.
The layout is written into a folder beside DEST and renamed into place, so DEST is whole or absent."""

import csv
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from nnlab.errors import ConfigError, DataNotFoundError, unknown_name

LAYOUT_OF = {"fashion_mnist": "npy", "mnist": "npy", "fruits": "folders", "faces": "faces"}


def dataset_settings(name: str, source: str | None) -> dict[str, Any]:
    """The dataset preset's resolved keys (path, folders, columns, …), with `source` as its path if given."""
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf

    from nnlab import config  # noqa: F401  (registers the schemas the presets extend)

    with initialize_config_module(config_module="nnlab.conf", version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"dataset={name}"])
    settings = OmegaConf.to_container(cfg.dataset, resolve=True)
    if source:
        settings["path"] = str(Path(source).expanduser().resolve())
    return settings


def prepare(name: str, dest: str | Path, source: str | None = None, limit: int | None = None,
            seed: int = 0) -> str:
    """Write the layout; returns what was written, in words."""
    if name not in LAYOUT_OF:
        raise ConfigError(unknown_name("course dataset", name, LAYOUT_OF))
    dest = Path(dest).expanduser().resolve()
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise ConfigError(f"{dest} already exists and is not an empty folder; name a new folder for the layout.")
    settings = dataset_settings(name, source)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=f".{dest.name}.") as tmp:
        written = WRITERS[LAYOUT_OF[name]](settings, Path(tmp) / "layout", limit, seed)
        if dest.exists():
            dest.rmdir()
        (Path(tmp) / "layout").rename(dest)
    return f"{written} in {dest}"


def write_npy(settings: dict, dest: Path, limit: int | None, seed: int) -> str:
    """The four .npy files, from nnlab's IDX loader (all training images unless `limit`; the whole test set)."""
    from nnlab.data import load_dataset

    data = load_dataset({**settings, "val_split": 0.0, "limit": limit}, seed=seed)
    dest.mkdir()
    for part, (x, y) in (("train", data.train), ("test", data.test)):
        np.save(dest / f"{part}_features.npy", np.asarray(x, np.uint8).reshape(len(x), *x.shape[1:3]))
        np.save(dest / f"{part}_target.npy", np.asarray(y, np.uint8))
    return f"{len(data.train[0])} training and {len(data.test[0])} test images as .npy files"


def write_folders(settings: dict, dest: Path, limit: int | None, seed: int) -> str:
    """Every photo of the copy's training and test trees in one folder per class (file names kept; a test photo
    whose name a training photo already took gets its tree's name in front)."""
    from nnlab.data.folders import class_files, find_classes, require_dir, seeded_subset

    root = require_dir(settings["path"], "<path>/<train_dir>/<class>/<photos> (and <path>/<test_dir>/…)")
    trees = [root / d for d in (settings["train_dir"], settings["test_dir"]) if d and (root / d).is_dir()] or [root]
    names, _ = find_classes(trees, settings.get("classes"))
    listed = [(tree, file, label) for tree in trees for file, label in zip(*class_files(tree, names))]
    keep = seeded_subset(np.array([label for _, _, label in listed]), limit, seed)
    for i in keep:
        tree, file, label = listed[i]
        folder = dest / names[label]
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / file.name
        shutil.copyfile(file, target if not target.exists() else folder / f"{tree.name}_{file.name}")
    return f"{len(keep)} photos in {len(names)} class folders"


def write_faces(settings: dict, dest: Path, limit: int | None, seed: int) -> str:
    """labels.csv with the platform's columns, and the photos it names, from the copy's labels and images."""
    from nnlab.data.folders import read_labels, require_dir, seeded_subset

    root = require_dir(settings["path"], "<path>/labels.csv and <path>/final_files/")
    table, images = root / settings["labels_file"], root / settings["images_dir"]
    if not table.is_file() or not images.is_dir():
        raise DataNotFoundError(f"{table if not table.is_file() else images} is missing; nnlab's faces copy is "
                                f"{settings['labels_file']} + {settings['images_dir']}/ (or give --from PATH).")
    names, ages = read_labels(table, settings["file_column"], settings["target_column"])
    present = [i for i, n in enumerate(names) if (images / n).is_file()]
    keep = [present[i] for i in seeded_subset(np.zeros(len(present)), limit, seed)]
    (dest / "final_files").mkdir(parents=True)
    with open(dest / "labels.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["file_name", "real_age"])
        for i in keep:
            shutil.copyfile(images / names[i], dest / "final_files" / names[i])
            writer.writerow([names[i], f"{ages[i]:g}"])
    return f"{len(keep)} photos with their ages"


WRITERS = {"npy": write_npy, "folders": write_folders, "faces": write_faces}

"""detection_folder: COCO JSON and Pascal VOC XML layouts, written from generated scenes canvases."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nnlab.data import load_dataset
from nnlab.data.scenes import held_out_canvas
from nnlab.errors import DataNotFoundError

NAMES = [str(k) for k in range(10)]


def canvases(n: int, size: int = 64):
    return [held_out_canvas(seed=i, items=3, canvas_size=[size, size], item_size=[12, 20])[:2] for i in range(n)]


def write_coco(root: Path, n: int = 6, extra: list | None = None) -> list:
    (root / "images").mkdir(parents=True)
    doc = {"images": [], "annotations": [], "categories": [{"id": k + 1, "name": name} for k, name in enumerate(NAMES)]}
    scenes = canvases(n)
    for i, (image, rows) in enumerate(scenes):
        Image.fromarray(image).save(root / "images" / f"c{i}.png")
        doc["images"].append({"id": i, "file_name": f"c{i}.png", "width": 64, "height": 64})
        doc["annotations"] += [{"id": len(doc["annotations"]) + 1, "image_id": i, "category_id": k + 1,
                                "bbox": [x0, y0, x1 - x0, y1 - y0]} for x0, y0, x1, y1, k in rows]
    doc["annotations"] += extra or []
    (root / "annotations.json").write_text(json.dumps(doc))
    return scenes


def write_voc(root: Path, n: int = 6) -> list:
    (root / "images").mkdir(parents=True)
    (root / "annotations").mkdir()
    scenes = canvases(n)
    for i, (image, rows) in enumerate(scenes):
        Image.fromarray(image).save(root / "images" / f"c{i}.jpg", quality=95)
        objects = "".join(f"<object><name>{NAMES[k]}</name><bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin>"
                          f"<xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>" for x0, y0, x1, y1, k in rows)
        (root / "annotations" / f"c{i}.xml").write_text(
            f"<annotation><filename>c{i}.jpg</filename><size><width>64</width><height>64</height></size>"
            f"{objects}</annotation>")
    return scenes


def all_rows(data) -> list:
    rows = [r for part in (data.train, data.val, data.test) if part is not None for y in part[1] for r in y]
    return sorted(tuple(float(v) for v in r) for r in rows if r[4] >= 0)


def load(root: Path, **options):
    return load_dataset({"name": "detection_folder", "path": str(root), "test_split": 0.34, "val_split": 0.0,
                         "cache_dir": None, **options}, seed=0)


def test_coco_boxes_are_read_scaled_with_the_resized_images_and_padded_with_minus_one(tmp_path):
    scenes = write_coco(tmp_path / "coco")
    data = load(tmp_path / "coco", image_size=[32, 32])
    assert data.task == "detection" and data.class_names == NAMES and data.train[0].shape[1:] == (32, 32, 3)
    assert len(data.train[0]) + len(data.test[0]) == 6
    expected = sorted((x0 / 2, y0 / 2, x1 / 2, y1 / 2, float(k)) for _, rows in scenes for x0, y0, x1, y1, k in rows)
    np.testing.assert_allclose(all_rows(data), expected)
    assert data.train[1].shape[1:] == (3, 5) and (data.train[1][..., 4] >= -1).all()


def test_voc_xml_gives_the_same_boxes_with_classes_sorted_by_name(tmp_path):
    scenes = write_voc(tmp_path / "voc")
    data = load(tmp_path / "voc", image_size=[64, 64])
    present = sorted({NAMES[k] for _, rows in scenes for *_, k in rows})
    assert data.class_names == present
    expected = sorted((*map(float, r[:4]), float(present.index(NAMES[r[4]]))) for _, rows in scenes for r in rows)
    np.testing.assert_allclose(all_rows(data), expected)


def test_a_box_of_an_unknown_category_is_skipped_and_reported(tmp_path):
    write_coco(tmp_path / "coco", extra=[{"id": 999, "image_id": 0, "category_id": 77, "bbox": [1, 1, 5, 5]}])
    data = load(tmp_path / "coco", image_size=[64, 64], max_bad_fraction=0.5)
    assert any("unknown image or category" in p for p in data.info["problems"])
    assert data.preprocessing == {"pixel_scale": 1.0}  # detectors take raw pixels: predict must not rescale


def test_a_folder_without_annotations_names_both_formats(tmp_path):
    (tmp_path / "images").mkdir()
    with pytest.raises(DataNotFoundError, match=r"annotations\.json \(COCO\).*annotations/ folder \(VOC\)"):
        load(tmp_path, image_size=[64, 64])


def test_train_and_test_folders_are_used_as_given(tmp_path):
    write_coco(tmp_path / "split" / "train", n=4)
    write_coco(tmp_path / "split" / "test", n=2)
    data = load(tmp_path / "split", image_size=[64, 64])
    assert len(data.train[0]) == 4 and len(data.test[0]) == 2 and np.asarray(data.test[1]).shape[0] == 2

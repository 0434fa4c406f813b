import numpy as np
import pytest
from tests_support import make_idx_dataset

from nnlab.data import load_dataset
from nnlab.data.idx import FASHION_CLASSES
from nnlab.data.scenes import digit_pools
from nnlab.errors import DataNotFoundError, NnlabError

DIGITS = [str(k) for k in range(10)]


def load(seed=0, **kw):
    return load_dataset({"name": "scenes", "count": 50, "canvas_size": [32, 32], "item_size": [8, 14], **kw}, seed)


def thresholded(items: np.ndarray) -> np.ndarray:
    return items > 0.5 * items.max(axis=(1, 2), keepdims=True)


def test_masks_follow_the_segmentation_data_contract():
    data = load(val_split=0.1, test_split=0.2)
    assert data.task == "segmentation" and data.class_names == ["background", *DIGITS] and data.rescale == 1 / 255
    assert data.sizes() == {"train": 36, "val": 4, "test": 10}
    for x, y in (data.train, data.val, data.test):
        assert x.dtype == np.uint8 and x.shape[1:] == (32, 32, 3)
        assert y.dtype == np.uint8 and y.shape == x.shape[:3]
        assert y.max() < len(data.class_names)
    assert (data.train[1] > 0).any() and (data.train[1] == 0).any()


def test_masks_are_exactly_the_pixels_painted_over_a_flat_background():
    data = load(texture=False, noise=0.0, items=[1, 4], count=30)
    for x, y in zip(*data.train):
        background = np.unique(x[y == 0], axis=0)
        assert len(background) == 1  # flat and noiseless: one colour wherever the mask says background
        painted = (x != background[0]).any(axis=-1)
        assert np.array_equal(painted, y > 0)


def test_a_single_unscaled_item_has_the_thresholded_shape_of_a_source_digit_of_its_class():
    seed = 3
    data = load(seed, canvas_size=[8, 8], item_size=[8, 8], items=[1, 1], count=40, val_split=0.0)
    (train_items, train_labels), (test_items, test_labels), _ = digit_pools(seed)
    for (x, y), items, labels in ((data.train, train_items, train_labels), (data.test, test_items, test_labels)):
        shapes = thresholded(items)
        for mask in y:
            label = int(mask.max()) - 1
            same = shapes[labels == label]
            assert (same == (mask > 0)).all(axis=(1, 2)).any(), "mask matches no item of its class in its pool"


def test_test_canvases_use_held_out_digits_only():
    (train_items, _), (test_items, _), _ = digit_pools(0)
    assert len(test_items) == 360 and len(train_items) == 1437
    train_rows = {row.tobytes() for row in train_items}
    assert not any(row.tobytes() in train_rows for row in test_items)
    data = load(0, canvas_size=[8, 8], item_size=[8, 8], items=[1, 1], count=60, test_split=0.5)
    test_shapes = thresholded(test_items).reshape(len(test_items), -1)
    matched = [(test_shapes == (mask > 0).ravel()).all(axis=1).any() for mask in data.test[1]]
    assert all(matched)  # every test canvas shows a test-pool digit


def test_the_same_seed_gives_identical_arrays_and_another_seed_differs():
    a, b, c = load(seed=7), load(seed=7), load(seed=8)
    for part in ("train", "val", "test"):
        assert all(np.array_equal(u, v) for u, v in zip(getattr(a, part), getattr(b, part)))
    assert not np.array_equal(a.train[0], c.train[0])


def test_limit_caps_the_training_canvases_but_never_the_test_set():
    full, small = load(count=50, limit=None), load(count=50, limit=12)
    assert small.sizes()["train"] + small.sizes()["val"] == 12
    assert full.sizes()["train"] + full.sizes()["val"] == 40
    assert np.array_equal(full.test[0], small.test[0]) and np.array_equal(full.test[1], small.test[1])


def overlap_area(a: np.ndarray, b: np.ndarray) -> float:
    return max(min(a[2], b[2]) - max(a[0], b[0]), 0) * max(min(a[3], b[3]) - max(a[1], b[1]), 0)


def test_boxes_are_tight_around_the_mask_padded_with_minus_one_and_disjoint_at_max_overlap_0():
    options = {"items": [2, 5], "count": 40, "max_overlap": 0.0}
    boxes, masks = load(target="boxes", **options), load(target="masks", **options)
    assert boxes.task == "detection" and boxes.class_names == DIGITS
    assert boxes.train[1].dtype == np.float32 and boxes.train[1].shape == (28, 5, 5)
    assert np.array_equal(boxes.train[0], masks.train[0])  # the target changes y only
    for rows, mask in zip(boxes.train[1], masks.train[1]):
        real = rows[rows[:, 4] >= 0]
        assert (rows[len(real):] == -1).all(), "padding rows come after the items and are all -1"
        covered = np.zeros(mask.shape, bool)
        for i, (x0, y0, x1, y1, k) in enumerate(real.astype(int)):
            inside = mask[y0:y1, x0:x1] == k + 1
            assert inside[0].any() and inside[-1].any() and inside[:, 0].any() and inside[:, -1].any()
            covered[y0:y1, x0:x1] |= inside
            assert all(overlap_area(real[i], other) == 0 for other in real[i + 1 :])
        assert np.array_equal(covered, mask > 0)


def test_max_overlap_above_0_lets_items_cover_each_other():
    data = load(target="boxes", items=[6, 6], count=30, max_overlap=0.9, canvas_size=[24, 24])
    overlaps = [overlap_area(a, b) > 0 for rows in data.train[1] for i, a in enumerate(rows[rows[:, 4] >= 0])
                for b in rows[rows[:, 4] >= 0][i + 1 :]]
    assert any(overlaps)


def test_a_subset_of_classes_is_named_and_labelled_in_order():
    data = load(classes=[7, 3], canvas_size=[8, 8], item_size=[8, 8], items=[1, 1], count=40, val_split=0.0)
    assert data.class_names == ["background", "7", "3"]
    (items, labels), _, _ = digit_pools(0)
    sevens = thresholded(items[labels == 7])
    for mask in data.train[1]:
        assert set(np.unique(mask)) <= {0, 1, 2}
        if mask.max() == 1:  # class 1 is the first listed source class, 7
            assert (sevens == (mask > 0)).all(axis=(1, 2)).any()


def test_fashion_source_reads_the_idx_files_and_paints_each_items_bright_stripe(tmp_path):
    root = make_idx_dataset(tmp_path / "fashion", n_train=60, n_test=30)
    data = load(source="fashion_mnist", path=str(root), canvas_size=[28, 28], item_size=[28, 28], items=[1, 1],
                texture=False, noise=0.0, count=30, val_split=0.0)
    assert data.class_names == ["background", *FASHION_CLASSES]
    for mask in np.concatenate([data.train[1], data.test[1]]):
        k = int(mask.max()) - 1  # class k's items are bright only on rows 2k+3 and 2k+4, columns 4-23
        expected = np.zeros((28, 28), bool)
        expected[2 * k + 3 : 2 * k + 5, 4:24] = True
        assert np.array_equal(mask > 0, expected)


def test_fashion_source_without_its_files_fails_in_one_sentence_naming_the_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataNotFoundError, match=r"missing from .*empty: put train-images-idx3-ubyte.gz"):
        load(source="fashion_mnist", path=str(tmp_path / "empty"))


@pytest.mark.parametrize("option, message", [
    ({"target": "polygons"}, "dataset.target='polygons' must be masks or boxes"),
    ({"classes": [3, 12]}, r"dataset.classes=\[3, 12\] must list distinct class indices 0-9"),
    ({"items": [3, 1]}, r"dataset.items=\[3, 1\] must be \[min, max\]"),
    ({"count": 3, "test_split": 0.1}, "leaves 3 training and 0 test canvases"),
])
def test_bad_options_fail_in_one_sentence(option, message):
    with pytest.raises(NnlabError, match=message):
        load(**option)

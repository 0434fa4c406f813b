import numpy as np
import pytest
from data_fixtures import PALETTE, corrupt, make_oxford_pets, make_segmentation_folder
from PIL import Image

import nnlab.data.decoding as decoding
import nnlab.data.image_cache as image_cache
import nnlab.data.images as images
from nnlab.data import load_dataset
from nnlab.errors import DataNotFoundError, NnlabError


def load(name, path, cache=None, **kw):
    return load_dataset({"name": name, "path": str(path), "cache_dir": str(cache) if cache else None, **kw}, seed=0)


def assert_pixels_follow_their_masks(x: np.ndarray, y: np.ndarray, classes: int) -> None:
    """The fixture colours class k's pixels PALETTE[k]: images and masks must stay paired and aligned."""
    for k in range(classes):
        if (y == k).any():
            assert np.abs(x[y == k].mean(axis=0) - PALETTE[k]).max() < 20, f"class {k} pixels have another colour"


def test_segmentation_folder_reads_train_and_test_folders_into_the_data_contract(tmp_path):
    root = make_segmentation_folder(tmp_path / "seg", split=(10, 4), size=(16, 16), classes=3)
    data = load("segmentation_folder", root, image_size=[16, 16], val_split=0.2)
    assert data.task == "segmentation" and data.class_names == ["0", "1", "2"] and data.rescale == 1 / 255
    assert data.sizes() == {"train": 8, "val": 2, "test": 4}
    for x, y in (data.train, data.val, data.test):
        assert x.dtype == np.uint8 and x.shape[1:] == (16, 16, 3)
        assert y.dtype == np.uint8 and y.shape == x.shape[:3] and y.max() <= 2
        assert_pixels_follow_their_masks(x, y, 3)
    assert data.info["problems"] == [] and data.info["missing_masks"] == 0


def test_segmentation_folder_without_a_test_folder_holds_out_test_split(tmp_path):
    root = make_segmentation_folder(tmp_path / "seg", n=20)
    data = load("segmentation_folder", root, image_size=[16, 16], test_split=0.25, val_split=0.0)
    assert data.sizes() == {"train": 15, "val": 0, "test": 5}
    assert_pixels_follow_their_masks(*data.test, 3)


def test_limit_caps_training_pairs_but_not_the_held_out_test_set(tmp_path):
    root = make_segmentation_folder(tmp_path / "seg", n=20)
    full = load("segmentation_folder", root, image_size=[8, 8], test_split=0.25, val_split=0.2)
    small = load("segmentation_folder", root, image_size=[8, 8], test_split=0.25, val_split=0.2, limit=6)
    assert small.sizes()["train"] + small.sizes()["val"] == 6 and full.sizes()["train"] + full.sizes()["val"] == 15
    assert np.array_equal(small.test[0], full.test[0]) and np.array_equal(small.test[1], full.test[1])


def test_0_255_masks_become_0_1_named_background_and_foreground(tmp_path):
    root = make_segmentation_folder(tmp_path / "seg", n=8, binary=True)
    data = load("segmentation_folder", root, image_size=[16, 16], val_split=0.0)
    assert data.class_names == ["background", "foreground"]
    y = np.concatenate([data.train[1], data.test[1]])
    assert set(np.unique(y)) == {0, 1}
    assert_pixels_follow_their_masks(data.train[0], data.train[1], 2)


def test_palette_masks_give_indices_and_named_classes_and_grayscale_images(tmp_path):
    root = make_segmentation_folder(tmp_path / "seg", n=8, classes=4, mask_mode="P")
    data = load("segmentation_folder", root, image_size=[16, 16], val_split=0.0, color_mode="grayscale",
                classes=["sky", "tree", "road", "car"])
    assert data.class_names == ["sky", "tree", "road", "car"] and data.input_shape == (16, 16, 1)
    assert set(np.unique(np.concatenate([data.train[1], data.test[1]]))) == {0, 1, 2, 3}


def test_an_image_without_a_mask_and_a_mask_without_an_image_are_skipped_and_listed(tmp_path):
    root = make_segmentation_folder(tmp_path / "seg", n=12)
    (root / "masks" / "0004.png").unlink()
    (root / "images" / "0007.png").rename(tmp_path / "elsewhere.png")
    data = load("segmentation_folder", root, image_size=[16, 16], val_split=0.0, max_bad_fraction=0.2)
    assert sum(data.sizes().values()) == 10
    assert data.info["missing_masks"] == 1 and data.info["missing_images"] == 1
    assert any(p.startswith("image without a mask") and "0004.png" in p for p in data.info["problems"])
    assert any(p.startswith("mask without an image") and "0007.png" in p for p in data.info["problems"])
    assert_pixels_follow_their_masks(*data.train, 3)


def test_a_corrupt_mask_is_skipped_counted_and_listed(tmp_path):
    root = make_segmentation_folder(tmp_path / "seg", n=12)
    broken = corrupt(root / "masks" / "0002.png", "truncated")
    data = load("segmentation_folder", root, image_size=[16, 16], val_split=0.0, max_bad_fraction=0.1)
    assert sum(data.sizes().values()) == 11 and data.info["skipped_masks"] == 1
    assert any(p.startswith("unreadable mask") and str(broken) in p for p in data.info["problems"])
    assert_pixels_follow_their_masks(*data.train, 3)


def test_too_many_skipped_files_fail_in_one_sentence(tmp_path):
    root = make_segmentation_folder(tmp_path / "seg", n=12)
    (root / "masks" / "0004.png").unlink()
    with pytest.raises(NnlabError, match=r"1 of 12 image/mask files .* lack their partner .*max_bad_fraction=0.01"):
        load("segmentation_folder", root, image_size=[16, 16])


def test_a_mask_value_outside_the_classes_fails_naming_the_file_and_the_value(tmp_path):
    root = make_segmentation_folder(tmp_path / "seg", n=6, classes=3)
    mask = np.zeros((16, 16), np.uint8)
    mask[3:5, 3:5] = 7
    Image.fromarray(mask, "L").save(root / "masks" / "0003.png")
    with pytest.raises(NnlabError, match=r"Mask .*masks/0003.png has value 7, but dataset.classes names 3 classes "
                                         r"\(0-2\); fix the mask or list more classes"):
        load("segmentation_folder", root, image_size=[16, 16], classes=["a", "b", "c"])


def test_the_second_load_comes_from_the_cache(tmp_path, monkeypatch):
    root = make_segmentation_folder(tmp_path / "seg", split=(6, 3))
    cache = tmp_path / "cache"
    first = load("segmentation_folder", root, cache, image_size=[8, 8], val_split=0.0)
    assert len(list(cache.glob("*.npy"))) == 4  # images and masks, of the training and the test files

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again instead of reading the cache")

    monkeypatch.setattr(image_cache, "decode_files", no_decoding)
    second = load("segmentation_folder", root, cache, image_size=[8, 8], val_split=0.0)
    for a, b in ((first.train, second.train), (first.test, second.test)):
        assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


def test_masks_are_resized_by_nearest_neighbour_and_keep_only_class_values(tmp_path):
    root = make_segmentation_folder(tmp_path / "seg", n=6, size=(23, 17), binary=True)
    data = load("segmentation_folder", root, image_size=[7, 10], val_split=0.0)
    assert data.train[1].shape[1:] == (7, 10)
    assert set(np.unique(np.concatenate([data.train[1], data.test[1]]))) == {0, 1}  # bilinear would blend 0/255


def test_the_mask_mode_has_its_own_cache_key_and_leaves_image_decoding_alone(tmp_path):
    root = make_segmentation_folder(tmp_path / "seg", n=2, classes=3, mask_mode="P")
    masks = sorted((root / "masks").iterdir())
    key = image_cache.cache_key
    assert key(masks, (8, 8), images.MASK, False) != key(masks, (8, 8), "grayscale", False)
    decoded = decoding.decode_files(masks, (8, 8), images.MASK)
    assert decoded.images.shape == (2, 8, 8, 1) and decoded.images.max() <= 2  # indices, not palette colours
    assert decoding.decode_files(masks, (8, 8), "rgb").images.max() > 2
    with pytest.raises(NnlabError, match=r"dataset.color_mode='mask' is not one of \['grayscale', 'rgb'\]"):
        load("segmentation_folder", root, image_size=[8, 8], color_mode="mask")


def test_a_missing_layout_is_named_in_one_sentence(tmp_path):
    (tmp_path / "seg" / "images").mkdir(parents=True)
    with pytest.raises(DataNotFoundError, match=r"has no images/ and masks/ folders; expected <path>/images/"):
        load("segmentation_folder", tmp_path / "seg")


def test_oxford_pets_maps_trimaps_to_pet_background_border_and_ignores_dot_underscore_files(tmp_path):
    root = make_oxford_pets(tmp_path / "pets", n=10, size=(20, 24))
    data = load("oxford_pets", root, image_size=[20, 24], val_split=0.0, test_split=0.2)
    assert data.class_names == ["pet", "background", "border"] and data.task == "segmentation"
    assert data.sizes() == {"train": 8, "val": 0, "test": 2}
    assert data.info["problems"] == []  # the ._ files and the .mat file are not data
    y = np.concatenate([data.train[1], data.test[1]])
    assert set(np.unique(y)) == {0, 1, 2}
    pets, background = data.train[0][data.train[1] == 0], data.train[0][data.train[1] == 1]
    assert pets.mean(axis=0)[0] > 200 and background.mean(axis=0)[2] > 130  # yellow pets on blue


def test_oxford_pets_trimap_value_0_fails_naming_the_file(tmp_path):
    root = make_oxford_pets(tmp_path / "pets", n=4)
    Image.fromarray(np.zeros((20, 24), np.uint8), "L").save(root / "annotations" / "trimaps" / "beagle_1.png")
    with pytest.raises(NnlabError, match=r"Trimap .*beagle_1.png has value 0, but Oxford-IIIT Pet trimaps hold only"):
        load("oxford_pets", root, image_size=[20, 24])


def test_oxford_pets_missing_folders_name_the_layout(tmp_path):
    (tmp_path / "pets" / "images").mkdir(parents=True)
    with pytest.raises(DataNotFoundError, match=r"trimaps is missing\); expected <path>/images/\*.jpg \+ "
                                                r"<path>/annotations/trimaps/\*.png"):
        load("oxford_pets", tmp_path / "pets")

import json

import numpy as np
import pytest
from data_fixtures import corrupt, make_image_tree
from PIL import Image

from nnlab.data.image_cache import cache_key, cached_decode
from nnlab.data.decoding import decode_files
from nnlab.errors import NnlabError


def files_of(root):
    return sorted(p for p in root.rglob("*") if p.is_file())


def test_decode_converts_grayscale_palette_and_rgba_files_to_one_shape(tmp_path):
    root = make_image_tree(tmp_path, ["a"], 4, size=(10, 7), modes=("RGB", "L", "RGBA", "P"))
    decoded = decode_files(files_of(root), (8, 8), "rgb")
    assert decoded.images.shape == (4, 8, 8, 3) and decoded.images.dtype == np.uint8
    assert decoded.good.tolist() == [0, 1, 2, 3] and decoded.bad == []
    gray = decode_files(files_of(root), (8, 8), "grayscale")
    assert gray.images.shape == (4, 8, 8, 1)


def test_odd_sizes_are_resized_or_centre_cropped(tmp_path):
    Image.fromarray(np.hstack([np.zeros((20, 20, 3), np.uint8), np.full((20, 20, 3), 255, np.uint8),
                               np.zeros((20, 20, 3), np.uint8)])).save(tmp_path / "wide.png")
    squashed = decode_files([tmp_path / "wide.png"], (10, 10), "rgb").images[0]
    cropped = decode_files([tmp_path / "wide.png"], (10, 10), "rgb", crop=True).images[0]
    assert squashed[:, 0].max() == 0  # the black left third survives the squash
    assert cropped.min() > 200  # the centre crop keeps only the white middle


@pytest.mark.parametrize("how", ["garbage", "truncated", "empty"])
def test_unreadable_files_are_skipped_and_named(tmp_path, how):
    root = make_image_tree(tmp_path, ["a"], 5, size=(64, 64), fmt="jpg")
    broken = corrupt(files_of(root)[2], how)
    decoded = decode_files(files_of(root), (8, 8))
    assert decoded.good.tolist() == [0, 1, 3, 4] and len(decoded.images) == 4
    assert [b[0] for b in decoded.bad] == [str(broken)]


def test_bad_color_mode_is_one_sentence(tmp_path):
    with pytest.raises(NnlabError, match="color_mode 'cmyk'.*dataset.color_mode"):
        decode_files([], (8, 8), "cmyk")


def test_cache_is_reused_memory_mapped_and_invalidated_by_changes(tmp_path):
    root = make_image_tree(tmp_path / "img", ["a", "b"], 3)
    cache = tmp_path / "cache"
    first = cached_decode(files_of(root), (8, 8), cache_dir=str(cache))
    assert len(list(cache.glob("*.npy"))) == 1 and len(list(cache.glob("*.json"))) == 1
    second = cached_decode(files_of(root), (8, 8), cache_dir=str(cache))
    assert isinstance(second.images, np.memmap) and np.array_equal(first.images, second.images)
    key = cache_key(files_of(root), (8, 8), "rgb", False)
    assert key != cache_key(files_of(root), (9, 9), "rgb", False)
    Image.new("RGB", (5, 5)).save(files_of(root)[0])  # a replaced file changes the key
    assert cache_key(files_of(root), (8, 8), "rgb", False) != key


def test_a_cache_without_its_sidecar_is_not_trusted(tmp_path):
    root = make_image_tree(tmp_path / "img", ["a"], 2)
    cache = tmp_path / "cache"
    cached_decode(files_of(root), (8, 8), cache_dir=str(cache))
    meta = next(cache.glob("*.json"))
    good = json.loads(meta.read_text())["good"]
    meta.unlink()  # as if the run died between the two writes
    np.save(next(cache.glob("*.npy")), np.zeros((1, 1, 1, 1), np.uint8))
    again = cached_decode(files_of(root), (8, 8), cache_dir=str(cache))
    assert again.images.shape == (2, 8, 8, 3) and again.good.tolist() == good


def test_an_unwritable_cache_costs_speed_not_the_run(tmp_path):
    root = make_image_tree(tmp_path / "img", ["a"], 2)
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    decoded = cached_decode(files_of(root), (8, 8), cache_dir=str(blocker / "cache"))
    assert decoded.images.shape == (2, 8, 8, 3)


def test_a_truncated_cache_file_is_reported_deleted_and_rebuilt_identically(tmp_path, caplog):
    root = make_image_tree(tmp_path / "img", ["a", "b"], 3)
    cache = tmp_path / "cache"
    first = np.array(cached_decode(files_of(root), (8, 8), cache_dir=str(cache)).images)
    array_file = next(cache.glob("*.npy"))
    array_file.write_bytes(array_file.read_bytes()[:-50])  # a copy or a disk that lost the tail
    with caplog.at_level("WARNING", logger="nnlab.data.images"):
        again = cached_decode(files_of(root), (8, 8), cache_dir=str(cache))
    assert np.array_equal(np.asarray(again.images), first)
    assert any("damaged" in r.getMessage() and str(array_file) in r.getMessage() for r in caplog.records)
    reused = cached_decode(files_of(root), (8, 8), cache_dir=str(cache))  # the rebuilt entry is whole
    assert isinstance(reused.images, np.memmap) and np.array_equal(np.asarray(reused.images), first)


@pytest.mark.parametrize("wrong", [np.zeros((6, 8, 8, 1), np.uint8), np.zeros((6, 8, 8, 3), np.float32),
                                   np.zeros((5, 8, 8, 3), np.uint8)])
def test_a_cache_file_that_differs_from_its_sidecar_is_rebuilt(tmp_path, caplog, wrong):
    root = make_image_tree(tmp_path / "img", ["a", "b"], 3)
    cache = tmp_path / "cache"
    first = np.array(cached_decode(files_of(root), (8, 8), cache_dir=str(cache)).images)
    np.save(next(cache.glob("*.npy")), wrong)
    with caplog.at_level("WARNING", logger="nnlab.data.images"):
        again = cached_decode(files_of(root), (8, 8), cache_dir=str(cache))
    assert np.array_equal(np.asarray(again.images), first) and "damaged" in caplog.text


def test_a_cache_write_that_fails_leaves_no_temporary_file(tmp_path):
    from nnlab.data.image_cache import write_atomic

    def half_then_fail(f):
        f.write(b"half of it")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        write_atomic(tmp_path / "x.npy", half_then_fail)
    assert list(tmp_path.iterdir()) == []


def test_a_photo_stored_sideways_is_decoded_upright_by_its_exif_orientation(tmp_path):
    """Phones store portrait photos landscape with an EXIF orientation; training and predict see them upright."""
    from PIL import Image

    from nnlab.data.images import decode_one

    pixels = np.zeros((10, 20, 3), np.uint8)  # stored: 20 wide, 10 high; left half red, right half blue
    pixels[:, :10] = (255, 0, 0)
    pixels[:, 10:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6  # shown rotated 90 degrees clockwise: the stored left side becomes the top
    Image.fromarray(pixels).save(tmp_path / "phone.jpg", exif=exif, quality=95)
    upright = decode_one(tmp_path / "phone.jpg", (20, 10), "RGB", False)
    assert upright.shape == (20, 10, 3)
    assert upright[:8, :, 0].mean() > 200 and upright[12:, :, 2].mean() > 200  # red on top, blue below

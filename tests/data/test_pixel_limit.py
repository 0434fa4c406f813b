"""The pixel limit: a file whose header claims more pixels than `max_pixels` (dataset.max_image_pixels, default
Pillow's Image.MAX_IMAGE_PIXELS) is refused before any decoder allocates, on every path, as a bad file that is
named; raising the setting lets a file through.

The "bombs" here are a few hundred bytes: a header claiming 12000x12000 pixels (144 M: over nnlab's limit, under
the 179 M at which Pillow alone refuses, so that Pillow would only warn and start decoding) and one row of
pixels. Were one decoded, its data would run out after that row (an OSError), so a refusal named ImageTooLarge
shows that the header decided; the spies below also fail the test if OpenCV or Pillow starts decoding it."""

import json
import pickle
import struct
import subprocess
import sys
import warnings
import zlib
from types import SimpleNamespace

import numpy as np
import pytest
from data_fixtures import make_image_tree, make_segmentation_folder
from PIL import Image, ImageFile

from nnlab.config.data import ImageFolderConfig
from nnlab.data import decode_pool, load_dataset, opencv_decode
from nnlab.data.decoding import OPENCV, PROCESSES, THREADS, decode_files, plan
from nnlab.data.image_cache import cache_key, cached_decode
from nnlab.data.images import MAX_PIXELS, ImageTooLarge, decode_into, decode_mask, decode_one
from nnlab.errors import ConfigError, NnlabError

SIDE = 12000  # 144,000,000 pixels


def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def claimed_png(path, width: int = SIDE, height: int = SIDE, color: int = 2):
    """A PNG whose IHDR claims width x height (8-bit; colour type 2: RGB, 0: gray) with one row of data."""
    row = b"\0" * (1 + width * (3 if color == 2 else 1))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, color, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(row)) + chunk(b"IEND", b""))
    return path


def claimed_jpeg(path, width: int = SIDE, height: int = SIDE):
    """A JPEG whose baseline frame header claims width x height, 3 components, and nothing after it."""
    frame = struct.pack(">BHHB", 8, height, width, 3) + b"".join(bytes([i, 0x11, 0]) for i in (1, 2, 3))
    path.write_bytes(b"\xff\xd8\xff\xc0" + struct.pack(">H", 2 + len(frame)) + frame + b"\xff\xd9")
    return path


def claimed_bmp(path, width: int = SIDE, height: int = SIDE):
    """A 24-bit BMP whose header claims width x height (a format nnlab reads the size of through Pillow)."""
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    path.write_bytes(b"BM" + struct.pack("<IHHI", 54, 0, 0, 54) + info)
    return path


@pytest.fixture
def no_decoding(monkeypatch):
    """Fails the test if OpenCV or Pillow decodes pixels in this process."""
    def refuse(*args, **kwargs):
        raise AssertionError("a decoder was started on a file over the pixel limit")
    if opencv_decode.available():
        monkeypatch.setattr(opencv_decode.cv2, "imread", refuse)
    monkeypatch.setattr(ImageFile.ImageFile, "load", refuse)


def pillow_alone(monkeypatch):
    monkeypatch.setattr(opencv_decode, "cv2", None)


@pytest.mark.parametrize("decoder", ["opencv", "pillow"])
@pytest.mark.parametrize("make", [claimed_png, claimed_jpeg, claimed_bmp], ids=["png", "jpeg", "bmp"])
def test_a_file_over_the_limit_is_refused_from_its_header_by_each_decoder(tmp_path, monkeypatch, no_decoding,
                                                                          decoder, make):
    if decoder == "pillow":
        pillow_alone(monkeypatch)
    elif not opencv_decode.available():
        pytest.skip("opencv-python-headless is not installed")
    path = make(tmp_path / f"bomb.{make.__name__.removeprefix('claimed_')}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # Pillow's, for the BMP it opens
        with pytest.raises(ImageTooLarge, match=r"12000x12000 = 144,000,000 pixels, over the limit of 89,478,485 "
                                                r"\(dataset.max_image_pixels\)"):
            decode_one(path, (8, 8), "RGB", False)
    gray = claimed_png(tmp_path / "mask.png", color=0)
    with pytest.raises(ImageTooLarge):
        decode_mask(gray, (8, 8))


def test_the_default_limit_is_pillows():
    pillow = subprocess.run([sys.executable, "-c", "from PIL import Image; print(Image.MAX_IMAGE_PIXELS)"],
                            capture_output=True, text=True, check=True, timeout=60).stdout  # untouched by any test
    assert MAX_PIXELS == ImageFolderConfig(path="x").max_image_pixels == int(pillow) == 89_478_485


def small_tree(tmp_path, n=6):
    """n small RGB PNGs (20x30 = 600 pixels), the first a BMP so that Pillow's paths are chosen for the list."""
    root = make_image_tree(tmp_path / "img", ["a"], n, size=(30, 20))
    files = sorted((root / "a").iterdir())
    Image.open(files[0]).save(files[0].with_suffix(".bmp"))
    files[0].unlink()
    return sorted((root / "a").iterdir())


PATHS = {  # how decode_files is made to take each path, and the plan it must choose
    OPENCV: ({"processes": 2}, OPENCV),
    THREADS: ({"processes": 1}, THREADS),
    PROCESSES: ({"processes": 2, "pool_min_files": 1}, PROCESSES),
}


@pytest.mark.parametrize("path", list(PATHS))
def test_every_decoding_path_and_its_cache_skip_and_name_a_file_over_the_limit(tmp_path, monkeypatch, path):
    files = small_tree(tmp_path)
    bomb = claimed_png(tmp_path / "img" / "a" / "0002.png")  # among the others, in their order
    if path == OPENCV:
        if not opencv_decode.available():
            pytest.skip("opencv-python-headless is not installed")
        files = files[1:]  # PNGs only: OpenCV takes the list
    kwargs, expected = PATHS[path]
    assert plan(files, (8, 8), "rgb", **kwargs).how == expected
    monkeypatch.setattr(decode_pool, "MAX_CHUNK", 2)  # the workers and this process share the chunks
    decoded = decode_files(files, (8, 8), "rgb", **kwargs)
    assert [f for f, _ in decoded.bad] == [str(bomb)]
    assert decoded.bad[0][1].startswith("ImageTooLarge: 12000x12000 = 144,000,000 pixels")
    assert decoded.good.tolist() == [i for i, f in enumerate(files) if f != bomb]
    cached = cached_decode(files, (8, 8), "rgb", False, str(tmp_path / "cache"), **kwargs)
    assert cached.bad == decoded.bad and np.array_equal(np.asarray(cached.images), decoded.images)
    again = cached_decode(files, (8, 8), "rgb", False, str(tmp_path / "cache"), **kwargs)  # the entry, mapped
    assert isinstance(again.images, np.memmap) and again.bad == decoded.bad


def test_a_worker_process_refuses_a_file_over_the_limit_it_is_sent(tmp_path):
    """The limit travels with each chunk to the worker (a fresh interpreter), which refuses the file itself."""
    files = [*small_tree(tmp_path, 2), claimed_png(tmp_path / "bomb.png")]
    target = tmp_path / "rows.npy"
    rows = np.lib.format.open_memmap(target, mode="w+", dtype=np.uint8, shape=(3, 8, 8, 3))
    offset = rows.offset
    del rows
    folder = str(decode_pool.Path(decode_pool.__file__).parent)
    boot = [sys.executable, "-c", decode_pool.BOOT, json.dumps(sys.path), folder]  # as decode_pool starts one
    task = (0, files, str(target), offset, (3, 8, 8, 3), "RGB", False, 599)  # the small files have 600 pixels
    done = subprocess.run(boot, input=pickle.dumps(task), capture_output=True, timeout=60, check=True)
    status, start, bad = pickle.loads(done.stdout)
    assert (status, start) == ("ok", 0)
    assert [(row, file) for row, file, _ in bad] == [(0, str(files[0])), (1, str(files[1])), (2, str(files[2]))]
    assert all(reason.startswith("ImageTooLarge: ") and "over the limit of 599" in reason for _, _, reason in bad)


def test_raising_the_limit_lets_a_file_through_and_changes_the_cache_key(tmp_path):
    files = small_tree(tmp_path, 3)[1:]  # PNGs of 20x30 = 600 pixels
    cache = str(tmp_path / "cache")
    refused = cached_decode(files, (8, 8), "rgb", False, cache, max_pixels=599)
    assert [f for f, _ in refused.bad] == [str(f) for f in files] and len(refused.images) == 0
    allowed = cached_decode(files, (8, 8), "rgb", False, cache, max_pixels=600)  # as many as the limit: allowed
    assert allowed.bad == [] and allowed.good.tolist() == [0, 1]
    assert cache_key(files, (8, 8), "rgb", False, 599) != cache_key(files, (8, 8), "rgb", False, 600)
    assert cache_key(files, (8, 8), "rgb", False) == cache_key(files, (8, 8), "rgb", False, MAX_PIXELS)


def test_a_limit_above_pillows_own_decides_on_pillows_path(tmp_path, monkeypatch):
    """Pillow warns above Image.MAX_IMAGE_PIXELS and refuses above twice it: a larger setting raises it."""
    bmp = small_tree(tmp_path, 1)[0]
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # Pillow alone would refuse this 600-pixel BMP
    out = np.zeros((1, 8, 8, 3), np.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # Pillow's, at its raised limit of 599
        assert decode_into(out, 0, bmp, (8, 8), "RGB", False, max_pixels=599).startswith("ImageTooLarge: 30x20")
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        assert decode_into(out, 0, bmp, (8, 8), "RGB", False, max_pixels=600) is None
    assert Image.MAX_IMAGE_PIXELS == 600 and out.any()


def test_a_folder_with_a_bomb_skips_it_counts_it_and_names_it(tmp_path):
    root = make_image_tree(tmp_path / "set", ["cat", "dog"], 5, size=(12, 12))
    bomb = claimed_png(root / "dog" / "huge.png")  # a class folder of a downloaded dataset, as the user found it
    spec = {"name": "image_folder", "path": str(root), "image_size": [8, 8], "val_split": 0.0, "test_split": 0.3,
            "cache_dir": None}
    data = load_dataset({**spec, "max_bad_fraction": 0.2}, seed=0)
    assert data.info["skipped_images"] == 1 and len(data.train[0]) + len(data.test[0]) == 10
    (problem,) = [p for p in data.info["problems"] if str(bomb) in p]
    assert "ImageTooLarge: 12000x12000" in problem
    with pytest.raises(NnlabError, match=r"1 of 11 images .* cannot be read .*huge.png .*ImageTooLarge"):
        load_dataset(spec, seed=0)  # 9% > the default max_bad_fraction of 1%


def test_a_segmentation_mask_over_the_limit_is_skipped_with_its_image_and_named(tmp_path):
    root = make_segmentation_folder(tmp_path / "seg", n=6)
    bomb = claimed_png(sorted((root / "masks").iterdir())[2], color=0)
    data = load_dataset({"name": "segmentation_folder", "path": str(root), "image_size": [8, 8], "val_split": 0.0,
                         "cache_dir": str(tmp_path / "cache"), "max_bad_fraction": 0.5}, seed=0)
    assert data.info["skipped_masks"] == 1 and len(data.train[0]) + len(data.test[0]) == 5
    assert [p for p in data.info["problems"] if "ImageTooLarge" in p] == [
        f"unreadable mask: {bomb} (ImageTooLarge: 12000x12000 = 144,000,000 pixels, over the limit of 89,478,485 "
        "(dataset.max_image_pixels); not decoded)"]


def test_the_setting_is_validated(tmp_path):
    with pytest.raises(ConfigError, match="dataset.max_image_pixels=0 is out of range"):
        ImageFolderConfig(path=str(tmp_path), max_image_pixels=0)


def test_predict_refuses_an_input_over_the_runs_limit_in_one_sentence_and_skips_it_in_a_folder(tmp_path,
                                                                                            monkeypatch):
    from nnlab.use import inputs

    monkeypatch.setattr(inputs, "model_rescale", lambda model: None)  # no Keras model needed to read the spec
    source = SimpleNamespace(run_id="abc123", model=SimpleNamespace(input_shape=(None, 8, 8, 3)), record={},
                             config=SimpleNamespace(dataset=ImageFolderConfig(path="x", max_image_pixels=599)))
    spec = inputs.image_spec(source)
    assert spec.max_pixels == 599  # the run's setting
    good, bomb = small_tree(tmp_path, 2)[1], claimed_png(tmp_path / "bomb.png")
    with pytest.raises(NnlabError, match=r"^\S+bomb.png is too large to decode: 12000x12000 pixels, over run "
                                         r"abc123's limit of 599 \(its dataset.max_image_pixels\); pass a smaller "
                                         r"copy of the picture.$"):
        inputs.read_images([bomb], spec, source, strict=True)
    part = inputs.read_images([good, bomb], inputs.ImageSpec((8, 8), "RGB", False, None, 600), source, strict=False)
    assert part.inputs == [str(good)] and len(part.x) == 1
    assert len(part.problems) == 1 and part.problems[0].startswith(f"{bomb}: ImageTooLarge: 12000x12000")

"""OpenCV's fast path gives Pillow's pixels byte for byte, and leaves to Pillow the files where it might not."""

import io

import numpy as np
import pytest
from PIL import Image

from nnlab.data import images, opencv_decode

pytestmark = pytest.mark.skipif(not opencv_decode.available(), reason="opencv-python-headless is not installed")


def photo(width: int, height: int, seed: int = 0) -> np.ndarray:
    """Smooth colours with some noise: JPEG's chroma subsampling and upsampling both matter on it."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 / width, y * 255 / height, (x + y) * 127 / (width + height)], -1)
    return np.clip(base + rng.normal(0, 25, base.shape), 0, 255).astype(np.uint8)


def save(folder, name: str, im: Image.Image, **options):
    path = folder / name
    im.save(path, **options)
    return path


def oriented(im: Image.Image, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    out = io.BytesIO()
    im.save(out, "JPEG", exif=exif, quality=90)
    return out.getvalue()


def pillow_only(path, size, mode, crop, monkeypatch):
    with monkeypatch.context() as m:
        m.setattr(opencv_decode, "cv2", None)
        return images.decode_one(path, size, mode, crop)


FAST = [  # (file name, how it is written, target (height, width), mode, crop)
    ("rgb.jpg", lambda: Image.fromarray(photo(20, 12)), {"quality": 90}, (12, 20), "RGB", False),
    ("rgb444.jpg", lambda: Image.fromarray(photo(20, 12)), {"quality": 95, "subsampling": 0}, (12, 20), "RGB", False),
    ("progressive.jpg", lambda: Image.fromarray(photo(20, 12)), {"progressive": True}, (12, 20), "RGB", False),
    ("gray.jpg", lambda: Image.fromarray(photo(16, 16)[..., 0]), {}, (16, 16), "RGB", False),
    ("gray_l.jpg", lambda: Image.fromarray(photo(16, 16)[..., 0]), {}, (16, 16), "L", False),
    ("larger.jpg", lambda: Image.fromarray(photo(30, 18)), {}, (12, 20), "RGB", False),
    ("larger_crop.jpg", lambda: Image.fromarray(photo(30, 30)), {}, (12, 20), "RGB", True),
    ("rgb.png", lambda: Image.fromarray(photo(20, 12)), {}, (12, 20), "RGB", False),
    ("rgba.png", lambda: Image.fromarray(np.dstack([photo(20, 12), photo(20, 12, 1)[..., :1]])), {}, (12, 20), "RGB",
     False),
    ("palette.png", lambda: Image.fromarray(photo(20, 12)).quantize(200), {}, (12, 20), "RGB", False),
    ("palette_alpha.png", lambda: Image.fromarray(photo(20, 12)).quantize(200), {"transparency": 3}, (12, 20), "RGB",
     False),
    ("gray.png", lambda: Image.fromarray(photo(20, 12)[..., 1]), {}, (12, 20), "RGB", False),
    ("gray_l.png", lambda: Image.fromarray(photo(20, 12)[..., 1]), {}, (12, 20), "L", False),
    ("gray_alpha.png", lambda: Image.fromarray(photo(20, 12)[..., 1]).convert("LA"), {}, (12, 20), "RGB", False),
    ("smaller.png", lambda: Image.fromarray(photo(15, 9)), {}, (12, 20), "RGB", True),
]


@pytest.mark.parametrize(("name", "make", "options", "size", "mode", "crop"), FAST, ids=[f[0] for f in FAST])
def test_fast_path_takes_the_file_and_matches_pillow_byte_for_byte(tmp_path, monkeypatch, name, make, options, size,
                                                                    mode, crop):
    path = save(tmp_path, name, make(), **options)
    assert opencv_decode.decode(path, size, mode) is not None  # OpenCV decoded it
    fast = images.decode_one(path, size, mode, crop)
    assert fast.shape == (*size, 1 if mode == "L" else 3)
    assert np.array_equal(fast, pillow_only(path, size, mode, crop, monkeypatch))


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("size", [(12, 20), (20, 12), (16, 16)])
def test_exif_orientation_turns_the_photo_as_pillow_does(tmp_path, monkeypatch, orientation, size):
    path = tmp_path / f"o{orientation}.jpg"
    path.write_bytes(oriented(Image.fromarray(photo(20, 12)), orientation))
    assert opencv_decode.decode(path, size, "RGB") is not None
    assert np.array_equal(images.decode_one(path, size, "RGB", True), pillow_only(path, size, "RGB", True, monkeypatch))


SLOW = [  # files the fast path leaves to Pillow
    ("draft.jpg", lambda: Image.fromarray(photo(48, 30)), {}, (12, 20), "RGB"),  # Pillow decodes at 1/2 scale
    ("cmyk.jpg", lambda: Image.fromarray(photo(20, 12)).convert("CMYK"), {}, (12, 20), "RGB"),
    ("color_to_gray.jpg", lambda: Image.fromarray(photo(20, 12)), {}, (12, 20), "L"),
    ("color_to_gray.png", lambda: Image.fromarray(photo(20, 12)), {}, (12, 20), "L"),
    ("sixteen.png", lambda: Image.fromarray((photo(20, 12)[..., 0].astype(np.uint16) * 257)), {}, (12, 20), "RGB"),
    ("palette16.png", lambda: Image.fromarray(photo(20, 12)).quantize(16), {}, (12, 20), "RGB"),  # 4-bit
    ("onebit.png", lambda: Image.fromarray(photo(20, 12)[..., 0] > 128), {}, (12, 20), "RGB"),
    ("rgb.bmp", lambda: Image.fromarray(photo(20, 12)), {}, (12, 20), "RGB"),
]


@pytest.mark.parametrize(("name", "make", "options", "size", "mode"), SLOW, ids=[f[0] for f in SLOW])
def test_files_that_might_differ_are_left_to_pillow(tmp_path, name, make, options, size, mode):
    path = save(tmp_path, name, make(), **options)
    assert opencv_decode.decode(path, size, mode) is None
    assert images.decode_one(path, size, mode, False).shape == (*size, 1 if mode == "L" else 3)


def test_a_damaged_file_goes_to_pillow_which_gives_the_reason(tmp_path):
    good = save(tmp_path, "whole.jpg", Image.fromarray(photo(20, 12)))
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(good.read_bytes()[:200])
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    out = np.zeros((2, 12, 20, 3), np.uint8)
    reasons = [images.decode_into(out, i, p, (12, 20), "RGB", False) for i, p in enumerate([cut, garbage])]
    assert reasons[1] is not None and reasons[1].startswith(("OSError", "UnidentifiedImageError", "SyntaxError"))
    # A truncated JPEG: OpenCV returns what it could, so does Pillow (LOAD_TRUNCATED_IMAGES aside: it raises).
    assert reasons[0] is None or reasons[0].startswith("OSError")


def test_a_png_with_an_exif_orientation_decodes_as_pillow_turns_it(tmp_path, monkeypatch):
    exif = Image.Exif()
    exif[0x0112] = 6
    path = save(tmp_path, "turned.png", Image.fromarray(photo(20, 12)), exif=exif)
    assert opencv_decode.decode(path, (20, 12), "RGB").shape == (20, 12, 3)  # turned upright, as Pillow turns it
    fast = images.decode_one(path, (20, 12), "RGB", False)
    assert np.array_equal(fast, pillow_only(path, (20, 12), "RGB", False, monkeypatch))

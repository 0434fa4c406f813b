"""One image file → pixels (OpenCV where it gives Pillow's pixels, else Pillow), under a limit on its size.

How many files are decoded at once, in threads or worker processes, is `decoding`'s choice; `image_cache` keeps
its result on disk. Every path decodes a file here (`decode_into`), so each gives the same pixels, the same
reasons for a bad file, and the same pixel limit: a file of more than `max_pixels` pixels (default Pillow's
`Image.MAX_IMAGE_PIXELS`, 89,478,485; `dataset.max_image_pixels` raises it) is refused from its header, before
any decoder allocates, as a bad file like an unreadable one. Pillow only warns above its limit and refuses above
twice it, and OpenCV's own limit is 2**30 pixels: a 20000x20000 PNG of a few hundred KB holds 1.2 GB of RGB.
"""
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from nnlab.data import opencv_decode
from nnlab.errors import NnlabError

log = logging.getLogger(__name__)

EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
COLOR_MODES = {"rgb": ("RGB", 3), "grayscale": ("L", 1)}
MASK = "mask"  # class-index PNGs: nearest-neighbour resize, never colour-converted (its own cache key)
# Pillow's default Image.MAX_IMAGE_PIXELS (about a quarter of a gigabyte of RGB pixels); the config's default,
# dataset.max_image_pixels (nnlab.config.data.ImageDatasetConfig), is the same number.
MAX_PIXELS = 1024 * 1024 * 1024 // 4 // 3
IMAGE_ERRORS = (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError)  # a bad file, not a bug
PILLOW_LIMIT = threading.Lock()  # raising Image.MAX_IMAGE_PIXELS: one thread at a time


@dataclass
class Decoded:
    images: np.ndarray  # uint8, (n_good, height, width, channels)
    good: np.ndarray  # indices into the requested file list
    bad: list[tuple[str, str]] = field(default_factory=list)  # (file, reason)


class ImageTooLarge(Image.DecompressionBombError):
    """A file of more pixels than the limit, refused from its header: a kind of Pillow's own refusal, so every
    caller that skips or reports a bad file does so for this one too."""

    def __init__(self, width: int, height: int, limit: int):
        super().__init__(f"{width}x{height} = {width * height:,} pixels, over the limit of {limit:,} "
                         "(dataset.max_image_pixels); not decoded")
        self.width, self.height, self.limit = width, height, limit

    def __reduce__(self):
        return type(self), (self.width, self.height, self.limit)


def is_image(path: Path) -> bool:
    return path.suffix.lower() in EXTENSIONS and not path.name.startswith(".")


def check_pixels(width: int, height: int, max_pixels: int) -> None:
    """Refuse (ImageTooLarge) a picture of more than `max_pixels` pixels; as many is allowed."""
    if width * height > max_pixels:
        raise ImageTooLarge(width, height, max_pixels)


def checked_header(path: Path, max_pixels: int) -> opencv_decode.Header | None:
    """A PNG's or JPEG's header (None for other files), refused when it is too large: before Pillow opens the
    file, which would warn about it first, and before OpenCV decodes it, which would not refuse it."""
    if (header := opencv_decode.read_header(path)) is not None:
        check_pixels(header.width, header.height, max_pixels)
    return header


def open_image(path: Path, max_pixels: int) -> Image.Image:
    """`Image.open` (which reads the header alone), refusing a file of more than `max_pixels` pixels before it is
    decoded. Pillow refuses above twice its own limit, so a `max_pixels` above that limit raises it to
    `max_pixels`, in this process: the setting decides, as Pillow's documentation suggests."""
    if Image.MAX_IMAGE_PIXELS is not None and max_pixels > Image.MAX_IMAGE_PIXELS:
        with PILLOW_LIMIT:
            if Image.MAX_IMAGE_PIXELS is not None and max_pixels > Image.MAX_IMAGE_PIXELS:
                log.debug("raising Pillow's Image.MAX_IMAGE_PIXELS to %d", max_pixels)
                Image.MAX_IMAGE_PIXELS = max_pixels
    im = Image.open(path)
    try:
        check_pixels(*im.size, max_pixels)
    except ImageTooLarge:
        im.close()
        raise
    return im


def image_size(path: Path, max_pixels: int = MAX_PIXELS) -> tuple[int, int]:
    """(width, height) as stored, from the file's header; ImageTooLarge above `max_pixels` pixels."""
    if (header := checked_header(path, max_pixels)) is not None:
        return header.width, header.height
    with open_image(path, max_pixels) as im:
        return im.size


def decode_one(path: Path, size: tuple[int, int], mode: str, crop: bool, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """One file → (height, width, channels) uint8; grayscale, palette and RGBA files are converted to `mode`.
    A photo stored sideways (a phone's EXIF orientation) is turned upright first, as a viewer shows it. A file
    of more than `max_pixels` pixels raises ImageTooLarge before anything is decoded."""
    height, width = size
    header = checked_header(path, max_pixels)
    if header is not None and (array := opencv_decode.decode(path, size, mode, header)) is not None:
        if array.shape[:2] == size:  # the same pixels as Pillow's, without the GIL
            return array
        return fit_image(Image.fromarray(array[..., 0] if mode == "L" else array), size, mode, crop)
    with open_image(path, max_pixels) as im:
        turned = im.getexif().get(0x0112, 1) in (5, 6, 7, 8)  # stored sideways: draft for the swapped size
        im.draft(mode, (height, width) if turned else (width, height))  # JPEG: libjpeg decodes at a reduced scale
        ImageOps.exif_transpose(im, in_place=True)  # the same pixels as a transposed copy, without the copy
        return fit_image(im, size, mode, crop)


def fit_image(im: Image.Image, size: tuple[int, int], mode: str, crop: bool) -> np.ndarray:
    """An opened image → (height, width, channels) uint8: converted to `mode`, centre-cropped to the aspect ratio
    with `crop`, resized (bilinear). `decode_one` and `nnlab predict` share it, so both decode alike."""
    height, width = size
    im = im.convert(mode) if im.mode != mode else im
    if crop:  # centre crop to the target aspect ratio, as Keras's crop_to_aspect_ratio does
        scale = min(im.width / width, im.height / height)
        w, h = round(width * scale), round(height * scale)
        left, top = (im.width - w) // 2, (im.height - h) // 2
        im = im.crop((left, top, left + w, top + h))
    if im.size != (width, height):
        im = im.resize((width, height), Image.Resampling.BILINEAR)
    array = np.asarray(im, dtype=np.uint8)
    return array[..., None] if array.ndim == 2 else array


def decode_mask(path: Path, size: tuple[int, int], max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """One mask → (height, width, 1) uint8 of class indices. Palette (P) files keep their indices, not their
    colours; bilinear would invent in-between classes at every edge, so the resize is nearest-neighbour."""
    height, width = size
    checked_header(path, max_pixels)
    with open_image(path, max_pixels) as im:
        if im.mode == "1":
            im = im.convert("L")  # 0/255, which the loaders map to 0/1
        if im.size != (width, height):
            im = im.resize((width, height), Image.Resampling.NEAREST)
        array = np.asarray(im)
    if array.ndim == 3:  # an RGB(A) copy of a grayscale mask is fine; real colours are not class indices
        if not (array[..., :3] == array[..., :1]).all():
            raise ValueError(f"a {im.mode} mask with colours; save it as a palette (P) or grayscale (L) PNG")
        array = array[..., 0]
    if array.size and (array.min() < 0 or array.max() > 255):
        raise ValueError(f"mask values {array.min()}..{array.max()} do not fit 0-255")
    return array.astype(np.uint8)[..., None]


def decode_into(images: np.ndarray, i: int, path: Path, size: tuple[int, int], mode: str, crop: bool,
                max_pixels: int = MAX_PIXELS) -> str | None:
    """Decode `path` into `images[i]`; None, or why the file cannot be read (too large included). The one
    per-file step of the threads (`decoding`) and the worker processes (`decode_pool`), so all give the same
    pixels and the same reasons."""
    try:
        images[i] = (decode_mask(path, size, max_pixels) if mode == MASK
                     else decode_one(path, size, mode, crop, max_pixels))
    except IMAGE_ERRORS as err:
        return f"{type(err).__name__}: {err}"
    return None


def pixel_format(color_mode: str) -> tuple[str, int]:
    """(Pillow mode or MASK, channels) of a dataset.color_mode."""
    if color_mode not in COLOR_MODES and color_mode != MASK:
        raise NnlabError(f"color_mode '{color_mode}' is not one of {sorted(COLOR_MODES)}; fix dataset.color_mode.")
    return COLOR_MODES.get(color_mode, (MASK, 1))

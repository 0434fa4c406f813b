"""OpenCV's decoder for the files where it gives Pillow's pixels byte for byte, with the GIL released.

Pillow parses a file's headers and markers in Python and holds the GIL for much of a small image's decode, so
threads barely beat one core (hence `decode_pool`'s processes). `cv2.imread` reads, decodes and orients in C++
with the GIL released: 2-4x faster an image on one core, on small JPEGs and PNGs, and it scales with threads
(benchmarks/README.md, "Image pipeline"). Both link libjpeg-turbo (accurate integer DCT, fancy upsampling) and
libpng, so they agree exactly where OpenCV's own conversions are not involved. The fast path takes a file only
then (tests/data/test_opencv_decode.py checks each kind against Pillow):
  - 8-bit PNGs and 8-bit JPEGs with 1 or 3 components (not CMYK, 16-bit, lossless or arithmetic-coded files);
  - for a grayscale target, grayscale files only (OpenCV and Pillow round colour→gray differently);
  - images that Pillow would not decode at a reduced scale (its JPEG draft mode): under twice the target size.
Anything else, and every file where OpenCV is not installed, returns None here and goes to Pillow. A file that
OpenCV cannot read goes to Pillow too, which then gives the reason. `read_header` gives the size of every PNG and
JPEG (the fast path's files or not), which `images.decode_one` checks against the pixel limit before any decoder
allocates: OpenCV's own limit (2**30 pixels) is far above Pillow's.
"""

import os
import struct
from pathlib import Path
from typing import NamedTuple

import numpy as np

try:  # opencv-python-headless: a dependency, but nnlab decodes without it (Pillow alone) where it is missing
    import cv2
except ImportError:  # pragma: no cover - depends on the environment
    cv2 = None
COLOR_RGB = getattr(cv2, "IMREAD_COLOR_RGB", None)  # OpenCV >= 4.10 decodes straight to RGB: no conversion

FIRST_BYTES = 1 << 12  # a JPEG's SOF marker follows its APP segments: within 4 KiB without an EXIF thumbnail,
HEAD_BYTES = 1 << 16  # within 64 KiB with one (any further, and Pillow decodes the file)
MORE = object()  # jpeg_frame: the head ends before the frame header
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_GRAY = 0  # IHDR colour type
JPEG_SOF = {0xC0, 0xC1, 0xC2}  # baseline, extended and progressive Huffman: what both decoders share
JPEG_OTHER_SOF = {0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}  # lossless, hierarchical, arithmetic
JPEG_STANDALONE = {0x01, *range(0xD0, 0xDA)}  # markers without a length: TEM, RSTn, SOI, EOI


class Header(NamedTuple):
    """What a PNG's or JPEG's first bytes say."""

    kind: str  # png | jpeg
    width: int
    height: int
    gray: bool  # one channel (PNG: gray without alpha; JPEG: one component)
    plain: bool  # 8-bit; a JPEG Huffman-coded with 1 or 3 components: what OpenCV decodes as Pillow does


def available() -> bool:
    return cv2 is not None


def read_header(path: Path) -> Header | None:
    """The header of a PNG or JPEG, from its first bytes; None for any other file, one that cannot be read, or a
    JPEG whose frame header lies beyond its first 64 KiB (Pillow then reads its size)."""
    try:  # os.read: a third of open().read()'s cost, which counts here (tens of µs an image in all)
        fd = os.open(path, os.O_RDONLY)
        try:
            head = os.read(fd, FIRST_BYTES)
            if head.startswith(b"\xff\xd8") and (frame := jpeg_frame(head)) is not MORE:
                return frame
            if len(head) == FIRST_BYTES and head.startswith(b"\xff\xd8"):
                head += os.read(fd, HEAD_BYTES - FIRST_BYTES)
        finally:
            os.close(fd)
    except OSError:
        return None
    if head.startswith(PNG_SIGNATURE) and head[12:16] == b"IHDR" and len(head) >= 26:
        width, height, depth, color = struct.unpack(">IIBB", head[16:26])
        return Header("png", width, height, color == PNG_GRAY, depth == 8)
    if head.startswith(b"\xff\xd8") and (frame := jpeg_frame(head)) is not MORE:
        return frame
    return None


def jpeg_frame(head: bytes) -> Header | None | object:
    """Walk a JPEG's markers to its frame header (SOF): its size, components and precision; MORE where `head`
    ends before it, None where it is damaged."""
    i = 2
    while i + 10 <= len(head):
        if head[i] != 0xFF:
            return None  # not at a marker: a damaged file, which Pillow reports
        marker = head[i + 1]
        if marker == 0xFF:  # a fill byte
            i += 1
            continue
        if marker in JPEG_STANDALONE:
            i += 2
            continue
        if marker in JPEG_SOF or marker in JPEG_OTHER_SOF:  # every frame header: the same layout
            precision, height, width, components = struct.unpack(">BHHB", head[i + 4:i + 10])
            plain = marker in JPEG_SOF and precision == 8 and components in (1, 3)
            return Header("jpeg", width, height, components == 1, plain)
        i += 2 + int.from_bytes(head[i + 2:i + 4], "big")
    return MORE


def takes(path: Path, size: tuple[int, int], mode: str, header: Header | None = None) -> bool:
    """Whether OpenCV decodes `path` (whose `header` the caller may have read) to the array Pillow would decode
    for a (height, width) `size` in `mode` (RGB or L) before resizing it."""
    if cv2 is None or mode not in ("L", "RGB"):
        return False
    info = header if header is not None else read_header(path)
    if info is None or not info.plain or (mode == "L" and not info.gray):
        return False
    (h, w), width, height = size, info.width, info.height
    # Pillow decodes a JPEG at least twice the size at 1/2, 1/4 or 1/8 scale before resizing it (draft mode).
    return info.kind != "jpeg" or max(min(width // w, height // h), min(width // h, height // w)) < 2


def decode(path: Path, size: tuple[int, int], mode: str, header: Header | None = None) -> np.ndarray | None:
    """The file as OpenCV decodes and orients it (height, width, channels), RGB or L, where that is the array
    Pillow would decode before resizing; None where it might not be (the caller then uses Pillow). The caller
    checks the size first (`images.decode_one`): OpenCV would allocate up to 2**30 pixels."""
    if not takes(path, size, mode, header):
        return None
    if mode == "L":
        array = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        return None if array is None else array[..., None]
    if COLOR_RGB is not None:
        return cv2.imread(str(path), COLOR_RGB)
    array = cv2.imread(str(path), cv2.IMREAD_COLOR)
    return None if array is None else cv2.cvtColor(array, cv2.COLOR_BGR2RGB)

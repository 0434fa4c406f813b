"""New inputs read as the run's training read its data: image files, folders of images (recursively, sorted),
CSV tables (one prediction per row; the airline series: one forecast per month with a full window, plus the
month after the last) and `.npy` arrays (model inputs as they are, or raw pixels of any size for an image model).

Images are decoded as the loader decoded them (nnlab.data.images.fit_image: size, colour mode, centre crop),
after turning the photo upright by its EXIF orientation, which training does not do (a phone's JPEG would
otherwise lie on its side), under the run's pixel limit (dataset.max_image_pixels): a larger picture is refused
from its header, never decoded. Table rows go through the run's recorded preprocessing.
"""

import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nnlab.errors import NnlabError
from nnlab.use.trained import Source, input_shape, model_rescale

log = logging.getLogger(__name__)

TABLE_SUFFIXES = (".csv", ".tsv", ".data", ".txt")


@dataclass
class ImageSpec:
    """How the loader decoded this run's images: the model's input size and channels, the config's crop."""

    size: tuple[int, int]
    mode: str  # PIL mode: L or RGB
    crop: bool
    scale: float | None  # None: the model takes raw uint8 pixels; else pixels are multiplied by it (float32)
    max_pixels: int | None = None  # larger pictures are refused: the run's dataset.max_image_pixels (None: Pillow's)

    def to_model(self, pixels: np.ndarray) -> np.ndarray:
        return pixels if self.scale is None else pixels.astype(np.float32) * self.scale


def image_spec(source: Source) -> ImageSpec | None:
    """None when the model does not take images (height, width, 1 or 3 channels)."""
    shape = input_shape(source.model)
    if None in shape[:2] and len(source.record.get("input_shape") or []) == 3:  # any size (a detector): training's
        shape = tuple(source.record["input_shape"][:2]) + shape[2:]
    if len(shape) != 3 or shape[-1] not in (1, 3) or None in shape:
        return None
    dataset = source.config.dataset
    setting = dataset.get if isinstance(dataset, dict) else lambda key, default: getattr(dataset, key, default)
    crop, max_pixels = setting("crop_to_aspect_ratio", False), setting("max_image_pixels", None)
    # A model without its own rescaling was trained on pixels in [0, 1] (digits): scale them here.
    scale = None if model_rescale(source.model) is not None else 1 / 255
    scale = source.record.get("pixel_scale", scale)  # a loader that says how its model takes pixels (detection)
    return ImageSpec((int(shape[0]), int(shape[1])), "L" if shape[-1] == 1 else "RGB", bool(crop), scale,
                     None if max_pixels is None else int(max_pixels))


def decode_upright(path: Path, spec: ImageSpec) -> np.ndarray:
    """One image file exactly as the loader decodes it (upright by its EXIF orientation, sized, cropped)."""
    from nnlab.data.images import MAX_PIXELS, decode_one

    return decode_one(path, spec.size, spec.mode, spec.crop, spec.max_pixels or MAX_PIXELS)


@dataclass
class Part:
    """Model inputs from one input file or folder, with what identifies each row."""

    x: np.ndarray
    inputs: list[str]
    rows: list[int | None]
    names: list[str]  # for written files (masks) and submission ids
    pixels: np.ndarray | None = None  # what to draw in predictions.png (images only)
    baseline: np.ndarray | None = None  # per row, in the target's units (a differenced series' last value)
    image_files: bool = False  # rows are image files (a submission's rows)
    problems: list[str] = field(default_factory=list)


def image_files_under(folder: Path) -> list[Path]:
    from nnlab.data.images import is_image

    return sorted(p for p in folder.rglob("*") if p.is_file() and is_image(p))


def read_images(files: list[Path], spec: ImageSpec | None, source: Source, strict: bool) -> Part:
    from nnlab.data.images import IMAGE_ERRORS, ImageTooLarge

    if spec is None:
        raise NnlabError(f"Run {source.run_id}'s model takes inputs of shape {input_shape(source.model)}, not "
                         f"images; pass {'CSV tables' if source.record.get('inputs') else '.npy arrays'} instead.")
    def decode(f: Path):
        try:
            return decode_upright(f, spec)
        except IMAGE_ERRORS as err:
            return err

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:  # Pillow decodes without the GIL
        decoded = list(pool.map(decode, files))
    good, pixels, problems = [], [], []
    for f, result in zip(files, decoded):
        if not isinstance(result, Exception):
            good.append(f)
            pixels.append(result)
        elif isinstance(result, ImageTooLarge) and strict:
            raise NnlabError(f"{f} is too large to decode: {result.width}x{result.height} pixels, over run "
                             f"{source.run_id}'s limit of {result.limit:,} (its dataset.max_image_pixels); pass a "
                             "smaller copy of the picture.") from None
        elif strict:
            raise NnlabError(f"{f} is not an image nnlab can read ({type(result).__name__}: {result}); pass image "
                             "files, folders of images, CSV tables or .npy arrays.") from result
        else:
            problems.append(f"{f}: {type(result).__name__}: {result}")
            why = "too large" if isinstance(result, ImageTooLarge) else "not a readable image"
            log.warning("skipped %s: %s (%s)", f, why, result)
    shape = (0, *spec.size, 1 if spec.mode == "L" else 3)
    array = np.stack(pixels) if pixels else np.zeros(shape, np.uint8)
    return Part(spec.to_model(array), [str(f) for f in good], [None] * len(good), [f.stem for f in good],
                pixels=array, image_files=True, problems=problems)


def read_frame(file: Path):
    """A CSV/TSV with a header, or a headerless whitespace or comma table (housing.data): (frame, has_header)."""
    import pandas as pd

    first = file.read_text(encoding="utf-8", errors="replace").lstrip().split("\n", 1)[0]
    sep = next((s for s in (",", ";", "\t") if s in first), r"\s+")
    cells = [c.strip().strip('"') for c in (first.split() if sep == r"\s+" else first.split(sep))]
    header = not all(is_number(c) for c in cells if c)
    try:
        frame = pd.read_csv(file, sep=sep, engine="python", header=0 if header else None)
    except (ValueError, pd.errors.ParserError) as err:
        raise NnlabError(f"Cannot parse {file} as a table ({err}); fix the file.") from err
    return frame, header


def is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def read_table(file: Path, source: Source) -> Part:
    """CSV rows → model inputs through the run's recorded preprocessing (tables.table_inputs / series_inputs)."""
    from nnlab.data.series import series_inputs
    from nnlab.data.tables import table_inputs

    prep = source.record
    kind = prep.get("inputs")
    if kind not in ("table", "series"):
        if image_spec(source) is not None:
            raise NnlabError(f"Run {source.run_id}'s model takes images, not tables; {file} is a table.")
        if not source.has_record:
            raise NnlabError(f"Run {source.run_id} has no preprocessing.json (it was trained before nnlab recorded "
                             "the feature standardization), so CSV rows cannot be prepared as in training; train "
                             "it again, or pass the preprocessed rows as a .npy array.")
        raise NnlabError(f"Run {source.run_id}'s dataset recorded no table preprocessing, so CSV rows cannot be "
                         "prepared as in training; pass the model's inputs as a .npy array.")
    frame, header = read_frame(file)
    if kind == "series":
        column = prep["column"] if header and prep["column"] in frame.columns else frame.columns[-1]
        import pandas as pd

        series = pd.to_numeric(frame[column], errors="coerce").to_numpy(np.float64)
        if np.isnan(series).any():
            raise NnlabError(f"{file}: {int(np.isnan(series).sum())} values of '{column}' are not numbers; fix them.")
        x, months, base = series_inputs(series, prep)
        return Part(x, [str(file)] * len(x), [int(m) for m in months], [f"{file.stem}_{m}" for m in months],
                    baseline=base)
    if not header:  # a headerless file: the features in training order, maybe followed by the target
        features = prep["features"]
        if frame.shape[1] not in (len(features), len(features) + 1):
            raise NnlabError(f"{file} has no header and {frame.shape[1]} columns; the model needs the "
                             f"{len(features)} features {', '.join(features)} (add a header row naming them).")
        frame.columns = features + ([prep.get("target") or "target"] if frame.shape[1] > len(features) else [])
    complete = frame[prep["features"]].notna().all(axis=1) if set(prep["features"]) <= set(frame.columns) else None
    if complete is not None and not complete.all():
        log.warning("%s: skipped %d rows with missing values", file, int((~complete).sum()))
    keep = np.flatnonzero(complete.to_numpy()) if complete is not None else np.arange(len(frame))
    x = table_inputs(frame.iloc[keep], prep, str(file))
    return Part(x, [str(file)] * len(x), [int(i) for i in keep], [f"{file.stem}_{i}" for i in keep])


def read_npy(file: Path, source: Source) -> Part:
    """An array of model inputs (one example or a batch); for an image model also uint8 pixels of any size."""
    try:
        a = np.load(file, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise NnlabError(f"Cannot read {file} as a .npy array ({err}); save it with numpy.save.") from err
    shape, spec = input_shape(source.model), image_spec(source)
    if a.shape == shape:
        a = a[None]
    elif shape[-1:] == (1,) and a.shape == shape[:-1]:  # one example without its channel axis
        a = a[None, ..., None]
    elif shape[-1:] == (1,) and a.shape[1:] == shape[:-1]:  # (n, H, W) of one channel, (n, window) of a series
        a = a[..., None]
    elif spec is not None and a.dtype == np.uint8 and a.ndim in (2, 3, 4):  # raw pixels of another size
        if a.ndim == 2:
            a = a[None, ..., None]
        elif a.ndim == 3:
            a = a[None] if a.shape[-1] in (1, 3, 4) else a[..., None]
        if a.shape[-1] in (1, 3, 4):
            a = resize_pixels(a, spec)
    if a.shape[1:] != shape:
        raise NnlabError(f"{file} holds an array of shape {np.shape(a)}; run {source.run_id}'s model takes {shape} "
                         f"per example (or a batch of them){'; uint8 pixels of any size are resized' if spec else ''}.")
    pixels = None
    if spec is not None:
        pixels = a
        a = spec.to_model(a) if a.dtype == np.uint8 else a
    a = a.astype(np.float32) if a.dtype.kind == "f" and a.dtype != np.float32 else a
    n = len(a)
    return Part(a, [str(file)] * n, list(range(n)), [f"{file.stem}_{i}" for i in range(n)], pixels=pixels)


def resize_pixels(array: np.ndarray, spec: ImageSpec) -> np.ndarray:
    from PIL import Image

    from nnlab.data.images import fit_image

    images = [Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a) for a in array]
    return np.stack([fit_image(im, spec.size, spec.mode, spec.crop) for im in images])


def gather(inputs: Sequence[str | Path], source: Source) -> list[Part]:
    """Each input → a Part: images (a folder: its images, recursively, sorted; unreadable ones skipped), tables,
    arrays. One sentence for a missing path or a file of no kind predict reads."""
    from nnlab.data.images import is_image

    if not inputs:
        raise NnlabError("Name the inputs to predict: image files, folders of images, CSV tables or .npy arrays.")
    spec = image_spec(source)
    parts = []
    for item in map(Path, inputs):
        if item.is_dir():
            files = image_files_under(item)
            if not files:
                raise NnlabError(f"Folder {item} holds no images (jpg, png, …); pass image files or folders of them.")
            parts.append(read_images(files, spec, source, strict=False))
        elif not item.is_file():
            raise NnlabError(f"Input {item} does not exist; pass image files, folders of images, CSV tables or .npy "
                             "arrays.")
        elif item.suffix.lower() == ".npy":
            parts.append(read_npy(item, source))
        elif item.suffix.lower() in TABLE_SUFFIXES[:2] or (item.suffix.lower() in TABLE_SUFFIXES and spec is None):
            parts.append(read_table(item, source))
        elif is_image(item) or spec is not None:
            parts.append(read_images([item], spec, source, strict=True))
        else:
            raise NnlabError(f"{item} is not an image, a CSV table or a .npy array; run {source.run_id}'s model "
                             f"takes {'CSV tables' if source.record.get('inputs') else '.npy arrays'}.")
    return parts


def unique_names(names: list[str]) -> list[str]:
    """File stems made unique (a/1.png and b/1.png → 1, 1_2) for the files written per input."""
    seen: dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name}_{seen[name]}")
    return out


"""`nnlab predict RUN INPUTS...`: a finished run's model on new files, preprocessed as its training data was.

The run supplies everything: its model (`model/model.keras`, which takes raw inputs: uint8 pixels that its first
layer rescales, or standardized table rows), its resolved `config.yaml` (decode settings, plugins, batch size)
and `preprocessing.json` (Data.preprocessing_record: task, class names, input shape, target scale, and for tables
the feature names, one-hot categories and the training part's means and stds).

Inputs are image files, folders of images (recursively, sorted), CSV tables (one prediction per row; the
airline series: one forecast per month with a full window, plus the month after the last) and `.npy` arrays
(model inputs as they are, or raw pixels of any size for an image model). Images are decoded as the loader
decoded them (nnlab.data.images.fit_image: size, colour mode, centre crop), after turning the photo upright by
its EXIF orientation, which training does not do (a phone's JPEG would otherwise lie on its side).

The task formats the answer (Task.describe_predictions); this module never asks which task it is.
"""

import argparse
import importlib
import json
import logging
import os
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nnlab.errors import NnlabError

log = logging.getLogger(__name__)

MODEL_ARTIFACT = "model/model.keras"
TABLE_SUFFIXES = (".csv", ".tsv", ".data", ".txt")
GRID_MAX = 16
OUTPUTS = ("predictions.csv", "predictions.png", "submission.csv", "skipped.txt")


@dataclass
class Source:
    """A finished run, ready to predict with: its model, config and preprocessing record."""

    run: Any  # mlflow Run
    client: Any  # MlflowClient
    config_text: str
    config: Any  # nnlab.config.Config
    record: dict[str, Any]  # preprocessing.json, or what older runs allow to rebuild of it
    model: Any = None  # keras.Model (loaded by load_model)

    @property
    def run_id(self) -> str:
        return self.run.info.run_id

    @property
    def has_record(self) -> bool:
        return bool(self.record.get("version"))


def run_id_of(ref: str) -> str:
    """A run id from `ID` or `runs:/ID[/model...]`."""
    ref = str(ref).strip()
    if ref.startswith("runs:/"):
        ref = ref.removeprefix("runs:/").strip("/").split("/", 1)[0]
    if not ref or "/" in ref or ref.endswith((".keras", ".h5")):
        raise NnlabError(f"'{ref}' is not a run id; pass the run's id (mlflow ui, nnlab report) or runs:/<id>.")
    return ref


def artifact_names(client, run_id: str, folder: str | None = None) -> set[str]:
    return {a.path for a in client.list_artifacts(run_id, folder)}


def download_text(client, run_id: str, path: str) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        return Path(client.download_artifacts(run_id, path, tmp)).read_text()


def load_source(run_ref: str, client) -> Source:
    """The run (one sentence when it is unknown, or has no model or config), its config and record."""
    from omegaconf import OmegaConf

    from nnlab.app import import_plugins
    from nnlab.config import typed_config
    from nnlab.report import get_run

    run_id = run_id_of(run_ref)
    run = get_run(client, run_id)
    if MODEL_ARTIFACT not in artifact_names(client, run_id, "model"):
        raise NnlabError(f"Run {run_id} has no {MODEL_ARTIFACT} (status {run.info.status}: it failed, is still "
                         "running, or was trained with trainer.save_model=false); predict with a finished run.")
    top = artifact_names(client, run_id)
    if "config.yaml" not in top:
        raise NnlabError(f"Run {run_id} has no config.yaml, so its preprocessing is unknown; use a run nnlab logged.")
    text = download_text(client, run_id, "config.yaml")
    import_plugins(list(OmegaConf.create(text).get("plugins") or []))
    config = typed_config(text)
    record = json.loads(download_text(client, run_id, "preprocessing.json")) if "preprocessing.json" in top else {}
    if not record:  # runs logged before preprocessing.json: what the run's tags and reports tell
        record = {"task": run.data.tags.get("task"), "class_names": legacy_class_names(client, run_id, top)}
    return Source(run, client, text, config, record)


def legacy_class_names(client, run_id: str, top: set[str]) -> list[str] | None:
    """Class names from the test reports of a run without preprocessing.json (their rows are in label order)."""
    if "classification_report.json" in top:
        table = json.loads(download_text(client, run_id, "classification_report.json"))
        return [k for k in table if k not in ("accuracy", "macro avg", "weighted avg", "micro avg")]
    if "iou_per_class.json" in top:
        return [row["class"] for row in json.loads(download_text(client, run_id, "iou_per_class.json"))]
    return None


def load_model(source: Source):
    """The run's Keras model (nnlab's custom layers and losses registered first)."""
    from nnlab.app import import_keras_quietly

    import_keras_quietly()
    import keras

    import nnlab.models  # noqa: F401  (registers MemberAverage)
    import nnlab.tasks.losses  # noqa: F401  (registers PixelCrossEntropy, Dice, MeanDice)
    from nnlab.tasks import TASKS, get_task

    task = source.record.get("task") or source.run.data.tags.get("task")
    for module in get_task(task).model_modules if task in TASKS else ():  # e.g. KerasHub for a detector
        importlib.import_module(module)

    with tempfile.TemporaryDirectory() as tmp:
        path = source.client.download_artifacts(source.run_id, MODEL_ARTIFACT, tmp)
        try:
            source.model = keras.saving.load_model(path, compile=False)
        except (ValueError, TypeError, OSError) as err:
            raise NnlabError(f"The model of run {source.run_id} cannot be loaded ({type(err).__name__}: "
                             f"{str(err).strip().splitlines()[0] if str(err).strip() else ''}); it may need a plugin "
                             "that is not importable here.") from err
    return source.model


def model_rescale(model) -> float | None:
    """The factor of the model's own input rescaling (nnlab names that layer `rescale`), or None."""
    import keras

    for layer in model.layers[:4]:
        if isinstance(layer, keras.layers.Rescaling) and layer.name == "rescale":
            return float(np.asarray(layer.scale).reshape(-1)[0])
    return None


def input_shape(model) -> tuple:
    shape = model.input_shape
    shape = shape[0] if isinstance(shape, list) else shape
    return tuple(shape[1:])


@dataclass
class ImageSpec:
    """How the loader decoded this run's images: the model's input size and channels, the config's crop."""

    size: tuple[int, int]
    mode: str  # PIL mode: L or RGB
    crop: bool
    scale: float | None  # None: the model takes raw uint8 pixels; else pixels are multiplied by it (float32)

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
    crop = dataset.get("crop_to_aspect_ratio", False) if isinstance(dataset, dict) else \
        getattr(dataset, "crop_to_aspect_ratio", False)
    # A model without its own rescaling was trained on pixels in [0, 1] (digits): scale them here.
    scale = None if model_rescale(source.model) is not None else 1 / 255
    scale = source.record.get("pixel_scale", scale)  # a loader that says how its model takes pixels (detection)
    return ImageSpec((int(shape[0]), int(shape[1])), "L" if shape[-1] == 1 else "RGB", bool(crop), scale)


def decode_upright(path: Path, spec: ImageSpec) -> np.ndarray:
    """One image file exactly as the loader decodes it (upright by its EXIF orientation, sized, cropped)."""
    from nnlab.data.images import decode_one

    return decode_one(path, spec.size, spec.mode, spec.crop)


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
    from PIL import Image, UnidentifiedImageError

    if spec is None:
        raise NnlabError(f"Run {source.run_id}'s model takes inputs of shape {input_shape(source.model)}, not "
                         f"images; pass {'CSV tables' if source.record.get('inputs') else '.npy arrays'} instead.")
    def decode(f: Path):
        try:
            return decode_upright(f, spec)
        except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as err:
            return err

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:  # Pillow decodes without the GIL
        decoded = list(pool.map(decode, files))
    good, pixels, problems = [], [], []
    for f, result in zip(files, decoded):
        if not isinstance(result, Exception):
            good.append(f)
            pixels.append(result)
        elif strict:
            raise NnlabError(f"{f} is not an image nnlab can read ({type(result).__name__}: {result}); pass image "
                             "files, folders of images, CSV tables or .npy arrays.") from result
        else:
            problems.append(f"{f}: {type(result).__name__}: {result}")
            log.warning("skipped %s: not a readable image (%s)", f, result)
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


def predict(run_id: str, inputs: Sequence[str | Path], out: str | Path | None = None, uri: str | None = None,
            batch_size: int | None = None, submission: bool = False) -> "pd.DataFrame":  # noqa: F821
    """Predict with run `run_id`'s model (store: `uri`, else $MLFLOW_TRACKING_URI, else ./mlflow.db) on
    `inputs`; writes predictions.csv (and predictions.png for images; submission.csv on request) to `out`
    (default predictions/<run id>/) and returns the predictions as a DataFrame."""
    import pandas as pd
    from mlflow.tracking import MlflowClient

    from nnlab import track
    from nnlab.tasks import get_task

    if isinstance(inputs, (str, Path)):
        inputs = [inputs]
    client = MlflowClient(track.find_store(uri))
    source = load_source(run_id, client)
    load_model(source)
    task_name = source.record.get("task") or source.run.data.tags.get("task")
    if not task_name:
        raise NnlabError(f"Run {source.run_id} has no task tag or preprocessing.json; it was not logged by nnlab.")
    task = get_task(task_name)
    parts = gather(inputs, source)
    x = np.concatenate([p.x for p in parts])
    if not len(x):
        raise NnlabError("None of the inputs held anything to predict (no rows, or no readable image).")
    out = Path(out) if out is not None else Path("predictions") / source.run_id
    out.mkdir(parents=True, exist_ok=True)
    for stale in OUTPUTS:  # an earlier prediction's files in the same folder would pass for this one's
        (out / stale).unlink(missing_ok=True)
    predictions = task.predict(source.model, x, batch_size or source.config.trainer.batch_size)
    has_base = any(p.baseline is not None for p in parts)
    baseline = np.concatenate([p.baseline if p.baseline is not None else np.zeros(len(p.x)) for p in parts]) \
        if has_base else None
    names = unique_names([n for p in parts for n in p.names])
    described = task.describe_predictions(predictions, source.record.get("class_names"),
                                          source.record.get("target_scale"), baseline=baseline, out=str(out),
                                          names=names)
    frame = pd.DataFrame([{k: v for k, v in row.items() if not k.startswith("_")} for row in described])
    frame.insert(0, "input", [i for p in parts for i in p.inputs])
    if any(r is not None for p in parts for r in p.rows):
        frame.insert(1, "row", pd.array([r for p in parts for r in p.rows], dtype="Int64"))
    frame.to_csv(out / "predictions.csv", index=False)
    pixels = [(px, row, name) for p in parts if p.pixels is not None
              for px, row, name in zip(p.pixels, described[offset(parts, p):], names[offset(parts, p):])]
    if pixels:
        prediction_grid(pixels[:GRID_MAX], source.record.get("class_names"), out / "predictions.png",
                        f"run {source.run_id[:8]}: {len(frame)} predictions"
                        f"{f' (first {GRID_MAX})' if len(pixels) > GRID_MAX else ''}")
    if submission:
        write_submission(parts, described, names, source, out / "submission.csv")
    problems = [line for p in parts for line in p.problems]
    if problems:
        (out / "skipped.txt").write_text("\n".join(problems) + "\n")
    return frame


def offset(parts: list[Part], part: Part) -> int:
    """Where `part`'s rows start among all rows."""
    start = 0
    for p in parts:
        if p is part:
            return start
        start += len(p.x)
    raise ValueError("part not in parts")


def write_submission(parts: list[Part], described: list[dict], names: list[str], source: Source, path: Path) -> None:
    """Kaggle's two-class image layout: `id` (the file's stem; numeric stems sorted as numbers) and `label`, the
    predicted class index (1 = the second class name, as the test report counts it)."""
    import pandas as pd

    classes = source.record.get("class_names") or []
    if len(classes) != 2 or "class_index" not in described[0] or image_spec(source) is None:
        raise NnlabError(f"--submission needs a two-class image classifier; run {source.run_id}'s model predicts "
                         f"{len(classes) or 'no'} classes from inputs of shape {input_shape(source.model)}.")
    rows, start = [], 0
    for p in parts:
        if p.image_files:
            rows += [(Path(i).stem, described[start + k]["class_index"]) for k, i in enumerate(p.inputs)]
        start += len(p.x)
    if not rows:
        raise NnlabError("--submission needs image files among the inputs (its ids are their names).")
    table = pd.DataFrame(rows, columns=["id", "label"])
    if table["id"].str.fullmatch(r"\d+").all():
        table["id"] = table["id"].astype(int)
        table = table.sort_values("id", kind="stable")
    table.to_csv(path, index=False)


def prediction_grid(items: list[tuple[np.ndarray, dict, str]], class_names: list[str] | None, path: Path,
                    title: str) -> None:
    """Up to 16 inputs with their predictions as titles; a class map (`_overlay`) drawn over its image."""
    import math

    from matplotlib.colors import ListedColormap

    from nnlab import plots

    plt = plots.plt
    cols = min(4, len(items))
    rows = math.ceil(len(items) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.8 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (pixels, row, name) in zip(axes.flat, items):
        image = np.squeeze(np.asarray(pixels))
        ax.imshow(image, cmap="gray" if image.ndim == 2 else None, vmin=0,
                  vmax=255 if np.asarray(pixels).dtype == np.uint8 else 1)
        overlay = row.get("_overlay")
        if overlay is not None:
            count = max(len(class_names or []), int(overlay.max()) + 1)
            colours = plt.get_cmap("tab20" if count > 10 else "tab10").colors[:count]
            ax.imshow(overlay, cmap=ListedColormap(colours), vmin=-0.5, vmax=count - 0.5, alpha=0.45,
                      interpolation="nearest")
        ax.set_title(f"{name}\n{row.get('_title', '')}", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plots.close(fig)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="nnlab predict", description="Predict with a finished run's model on new "
                                     "images, image folders, CSV tables or .npy arrays, preprocessed as in training.")
    parser.add_argument("run", help="the run's id, or runs:/<id>")
    parser.add_argument("inputs", nargs="+", help="image files, folders of images (recursive), CSV tables, .npy arrays")
    parser.add_argument("--out", help="output folder (default: predictions/<run id>)")
    parser.add_argument("--uri", help="MLflow store (default: $MLFLOW_TRACKING_URI, else ./mlflow.db)")
    parser.add_argument("--batch-size", type=int, help="default: the run's trainer.batch_size")
    parser.add_argument("--submission", action="store_true", help="also write submission.csv (id = file stem, "
                        "label = predicted class index) for a two-class image model")
    args = parser.parse_args(argv)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one line per run, not per file
    if args.batch_size is not None and args.batch_size < 1:
        raise NnlabError(f"--batch-size={args.batch_size} must be 1 or more.")
    out = Path(args.out) if args.out else Path("predictions") / run_id_of(args.run)
    frame = predict(args.run, args.inputs, out=out, uri=args.uri, batch_size=args.batch_size,
                    submission=args.submission)
    shown = frame.head(20)
    print(shown.to_string(index=False, max_colwidth=60))
    if len(frame) > len(shown):
        print(f"... {len(frame) - len(shown)} more rows")
    written = [name for name in OUTPUTS if (out / name).exists()] + (["masks/"] if "mask" in frame.columns else [])
    print(f"\nnnlab: {len(frame)} predictions of run {run_id_of(args.run)} written to {out}/ ({', '.join(written)})")

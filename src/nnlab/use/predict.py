"""`nnlab predict RUN INPUTS...`: a finished run's model on new files, preprocessed as its training data was.

The run supplies the model and the preprocessing (nnlab.use.trained); nnlab.use.inputs reads images, folders, tables
and arrays as training read its data. The task formats the answer (Task.describe_predictions); this module
never asks which task it is. Writes predictions.csv, predictions.png (images) and on request submission.csv.
"""

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from nnlab.errors import NnlabError
from nnlab.imports import add_plugin_options
from nnlab.use.inputs import Part, gather, image_spec, unique_names
from nnlab.use.trained import Source, input_shape, load_model, load_source, run_id_of

GRID_MAX = 16
OUTPUTS = ("predictions.csv", "predictions.png", "submission.csv", "skipped.txt")


def predict(run_id: str, inputs: Sequence[str | Path], out: str | Path | None = None, uri: str | None = None,
            batch_size: int | None = None, submission: bool = False, plugins: Sequence[str] = (),
            trust_plugins: bool = False) -> "pd.DataFrame":  # noqa: F821
    """Predict with run `run_id`'s model (store: `uri`, else $MLFLOW_TRACKING_URI, else ./mlflow.db) on
    `inputs`; writes predictions.csv (and predictions.png for images; submission.csv on request) to `out`
    (default predictions/<run id>/) and returns the predictions as a DataFrame. Plugins the run lists are
    imported only as `plugins` (the user's copies) or with `trust_plugins` (nnlab.imports.run_plugins)."""
    import pandas as pd

    from nnlab.tasks import get_task
    from nnlab.tracking import store

    if isinstance(inputs, (str, Path)):
        inputs = [inputs]
    client = store.client(uri)
    source = load_source(run_id, client, plugins, trust_plugins)
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
    add_plugin_options(parser)
    args = parser.parse_args(argv)
    if args.batch_size is not None and args.batch_size < 1:
        raise NnlabError(f"--batch-size={args.batch_size} must be 1 or more.")
    out = Path(args.out) if args.out else Path("predictions") / run_id_of(args.run)
    frame = predict(args.run, args.inputs, out=out, uri=args.uri, batch_size=args.batch_size,
                    submission=args.submission, plugins=args.plugins, trust_plugins=args.trust_plugins)
    shown = frame.head(20)
    print(shown.to_string(index=False, max_colwidth=60))
    if len(frame) > len(shown):
        print(f"... {len(frame) - len(shown)} more rows")
    written = [name for name in OUTPUTS if (out / name).exists()] + (["masks/"] if "mask" in frame.columns else [])
    print(f"\nnnlab: {len(frame)} predictions of run {run_id_of(args.run)} written to {out}/ ({', '.join(written)})")


"""The run's trained model in MLflow: its files (model.keras, model.h5) in the run's `model/` folder, and an
MLflow Model of the Keras flavor with a signature and an input example, logged all or nothing.

Keras is imported only inside the functions that need it.
"""

import contextlib
import io
import os
import re
import shutil
import tempfile
import types
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from nnlab.files import check_space, fsync_dir, h5_written, space_guard

# The MLflow Model's name: a job's is its model's (`cnn`, `mlp`, `unet`: what the UI's Models column shows), so its
# URI is `runs:/<run id>/<name>` (and `models:/<model id>`). MODEL_NAME is what runs logged before that were
# called (and what a model logged without a name is called): its `runs:/<run id>/model` merges the logged model's
# files with the run's `model/` folder (model.keras, model.h5). Resolving a `runs:/` URI looks the logged model up
# through MLflow's global tracking URI, so that must be the run's store (`find_store` sees to it).
MODEL_NAME = "model"
SAVE_ROOM = "free some space there (TMPDIR, tracking.artifact_location and trainer.export_dir choose the folders)"
NOT_IN_NAMES = re.compile(r"""[/:.%"']""")  # characters MLflow refuses in a logged model's name


def model_name(name: str | None) -> str:
    """A logged model's name from a model's name: MODEL_NAME where there is none, MLflow's refused characters
    (a plugin's `my.net`) as `_`."""
    return NOT_IN_NAMES.sub("_", name) if name else MODEL_NAME


def log_model(client: MlflowClient, run_id: str, model, formats: Sequence[str] = ("keras",),
              export_dir: str | None = None, example: Any = None, serving: Any = None, name: str | None = None) -> str:
    """Save as model.keras (and model.h5, the legacy format Netron and older tools read) into the run's
    `model/` folder, and into `export_dir` too when given (a stable path, e.g. for model.weights of a later
    transfer run); and log an MLflow Model named `model_name(name)` (Keras flavor) of `serving` (an inference copy that
    loads without nnlab; default: the model itself), with a signature and an input example from `example`
    (a few input rows). Returns the MLflow Model's id (`models:/<id>`).

    All or nothing: every file is written to a private folder first, and an MLflow Model whose logging
    fails is deleted again, so a failed save leaves neither files nor a model in the run. A full disk (the temp
    folder, the artifact folder or `export_dir`) ends in one sentence naming the full one."""
    folders = (tempfile.gettempdir(), local_folder(client.get_run(run_id).info.artifact_uri), export_dir)
    with space_guard(*folders, what="to save the model", hint=SAVE_ROOM), tempfile.TemporaryDirectory() as tmp:
        paths = []
        for fmt in formats:
            paths.append(Path(tmp) / f"model.{fmt}")
            save(model, paths[-1])
        model_id = log_mlflow_model(client, run_id, serving if serving is not None else model, example, name)
        try:
            for path in paths:
                client.log_artifact(run_id, str(path), "model")
        except BaseException:
            discard_logged_model(client, model_id)
            raise
        if export_dir:
            for path in paths:
                export(path, Path(export_dir).expanduser())
    return model_id


def save(model, path: Path) -> None:
    """model.save into the private folder of `path`, with the room checked first (h5py must not meet a full disk,
    files.h5_written). Keras's own temporary folders go there too: a failed .keras save leaves its assets folder
    behind, and the private folder is removed whatever happens."""
    from nnlab.training.checkpoints import expected_bytes

    check_space(tempfile.gettempdir(), expected_bytes(model), "to save the model", SAVE_ROOM)  # holds path.parent
    before, tempfile.tempdir = tempfile.tempdir, str(path.parent)  # what Keras's mkdtemp() uses; brief
    try:
        with h5_written(path.parent):
            model.save(path)
    finally:
        tempfile.tempdir = before


def local_folder(uri: str | None) -> Path | None:
    """The folder of a local artifact URI (file:, or a plain path); None for a remote one."""
    from urllib.parse import unquote, urlparse

    if not uri:
        return None
    if uri.startswith("file:"):
        return Path(unquote(urlparse(uri).path))
    return None if "://" in uri else Path(uri)


def log_mlflow_model(client: MlflowClient, run_id: str, model, example: Any = None, name: str | None = None) -> str:
    """Log `model` as the MLflow Model `model_name(name)` of run `run_id`, with MLflow's Keras flavor: a signature
    inferred from `example` and the model's predictions on it, `example` as the input example, pinned
    requirements (no subprocess to infer them). A model whose logging fails is marked FAILED and deleted
    (the UI then lists none); the error stands."""
    from mlflow.entities import LoggedModelStatus
    from mlflow.models import Model, infer_signature

    from nnlab.layers import float32_policy

    signature = None
    if example is not None:
        import keras

        predictions = keras.ops.convert_to_numpy(model.predict(example, verbose=0))
        signature = infer_signature(example, predictions)
    before = model_ids(client, run_id)
    try:
        # What mlflow.keras.log_model does, with KERAS_FLAVOR instead of the mlflow.keras module. MLflow
        # checks the input example by predicting on it, and Keras draws a progress bar: not for the console.
        # MLflow reloads the saved model to check the example: in float32, whatever policy training used.
        with contextlib.redirect_stdout(io.StringIO()), float32_policy():
            info = Model.log(artifact_path=None, name=model_name(name), flavor=KERAS_FLAVOR, model=model,
                             run_id=run_id, signature=signature, input_example=example,
                             pip_requirements=model_requirements())
    except BaseException:
        for model_id in model_ids(client, run_id) - before:  # MLflow makes and links it before saving files
            discard_logged_model(client, model_id)
        raise
    client.finalize_logged_model(info.model_id, LoggedModelStatus.READY)
    return info.model_id


def model_ids(client: MlflowClient, run_id: str) -> set[str]:
    """The ids of the logged models linked to run `run_id` as its outputs."""
    outputs = client.get_run(run_id).outputs
    return {o.model_id for o in outputs.model_outputs} if outputs is not None else set()


def discard_logged_model(client: MlflowClient, model_id: str) -> None:
    """Mark a logged model FAILED and delete it (the UI lists it no more), on the way out of a failed save."""
    from mlflow.entities import LoggedModelStatus

    with contextlib.suppress(MlflowException):
        client.finalize_logged_model(model_id, LoggedModelStatus.FAILED)
    with contextlib.suppress(MlflowException):
        client.delete_logged_model(model_id)


def save_keras_model(path: str, **kwargs) -> None:
    """mlflow.keras.save_model into a folder made first: MLflow 3.17's writes the input example before it creates
    the folder, so log_model with an input example fails (FileNotFoundError: .../model/input_example.json;
    mlflow/mlflow#16183, open). It never checks that the folder is new, so making it first is all it takes."""
    import mlflow.keras

    os.makedirs(path, exist_ok=True)
    mlflow.keras.save_model(path=path, **kwargs)


# mlflow.keras as Model.log sees a flavor: its name (the logged model's flavor) and save_model.
KERAS_FLAVOR = types.SimpleNamespace(__name__="mlflow.keras", save_model=save_keras_model)


def model_requirements() -> list[str]:
    """What serving the model needs, pinned to this environment: Keras and its backend's packages, under their
    installed distribution names (tensorflow-cpu, jax + jaxlib…). MLflow adds itself. (Without this, MLflow
    loads the model in a subprocess to infer them: seconds per run.)"""
    from importlib.metadata import PackageNotFoundError, packages_distributions, version

    import keras

    modules = {"tensorflow": ["tensorflow"], "jax": ["jax", "jaxlib"], "torch": ["torch"]}
    provided = packages_distributions()
    pinned = []
    for module in ["keras", *modules.get(keras.backend.backend(), [])]:
        for dist in dict.fromkeys(provided.get(module, [module])):
            try:
                pinned.append(f"{dist}=={version(dist)}")
            except PackageNotFoundError:  # not installed under that name: leave it unpinned
                pinned.append(dist)
    return pinned


def export(path: Path, folder: Path) -> None:
    """Copy `path` into `folder` durably: written beside the target, flushed to disk, then renamed, so the file
    under its final name is whole, even after a crash or a power cut."""
    folder.mkdir(parents=True, exist_ok=True)
    partial = folder / f".{path.name}.partial"
    try:
        with open(path, "rb") as src, open(partial, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
            dst.flush()
            os.fsync(dst.fileno())
        os.replace(partial, folder / path.name)
    finally:
        partial.unlink(missing_ok=True)
    fsync_dir(folder)

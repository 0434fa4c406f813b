"""A finished run as nnlab uses it after training: its model (`model/model.keras`, which takes raw inputs:
uint8 pixels that its first layer rescales, or standardized table rows), its resolved `config.yaml` (decode
settings, plugins, batch size) and `preprocessing.json` (Data.preprocessing_record: task, class names, input
shape, target scale, and for tables the feature names, one-hot categories and the training part's means and
stds). `nnlab predict`, `nnlab evaluate` and `nnlab detect` start here.
"""

import importlib
import json
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from nnlab.errors import NnlabError

MODEL_ARTIFACT = "model/model.keras"


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




def load_source(run_ref: str, client, plugins: Sequence[str] = (), trust_plugins: bool = False) -> Source:
    """The run (one sentence when it is unknown, or has no model or config), its config and record. `plugins`
    (the user's) are imported; those the run's stored config lists only with `trust_plugins`, else a listed one
    not passed fails in one sentence before anything loads (nnlab.imports.run_plugins)."""
    from omegaconf import OmegaConf

    from nnlab.config import typed_config
    from nnlab.imports import run_plugins
    from nnlab.tracking.store import get_run, run_config, run_text

    run_id = run_id_of(run_ref)
    run = get_run(client, run_id)
    if MODEL_ARTIFACT not in artifact_names(client, run_id, "model"):
        raise NnlabError(f"Run {run_id} has no {MODEL_ARTIFACT} (status {run.info.status}: it failed, is still "
                         "running, or was trained with trainer.save_model=false); predict with a finished run.")
    top = artifact_names(client, run_id)
    text = run_config(client, run_id)
    run_plugins(list(OmegaConf.create(text).get("plugins") or []), plugins, trust_plugins, run_id)
    config = typed_config(text)
    record = json.loads(run_text(client, run_id, "preprocessing.json")) if "preprocessing.json" in top else {}
    if not record:  # runs logged before preprocessing.json: what the run's tags and reports tell
        record = {"task": run.data.tags.get("task"), "class_names": legacy_class_names(client, run_id, top)}
    return Source(run, client, text, config, record)


def legacy_class_names(client, run_id: str, top: set[str]) -> list[str] | None:
    """Class names from the test reports of a run without preprocessing.json (their rows are in label order)."""
    from nnlab.tracking.store import run_text

    if "classification_report.json" in top:
        table = json.loads(run_text(client, run_id, "classification_report.json"))
        return [k for k in table if k not in ("accuracy", "macro avg", "weighted avg", "micro avg")]
    if "iou_per_class.json" in top:
        return [row["class"] for row in json.loads(run_text(client, run_id, "iou_per_class.json"))]
    return None


def load_model(source: Source):
    """The run's Keras model (nnlab's custom layers and losses registered first)."""
    from nnlab.imports import import_keras_quietly

    import_keras_quietly()
    import keras

    import nnlab.models  # registers MemberAverage
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
                             "that is not importable here (pass it with --plugins).") from err
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


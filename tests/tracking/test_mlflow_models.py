"""MLflow Models: each task's trained model, logged by an in-process job (as tests/test_app.py runs them) under its
model's name, loads with `mlflow.pyfunc.load_model("runs:/<id>/<model>")` (runs:/<id>/mlp) and predicts what the
run's own `model/model.keras` predicts, also in a Python process where nnlab cannot even be imported."""

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import keras
import mlflow
import numpy as np
import pytest
from data_fixtures import make_boston, make_split_tree
from hydra import compose, initialize_config_module
from mlflow.tracking import MlflowClient

from nnlab.job import app

EXPERIMENT = "mlflow-models"
MODELS = {"multiclass": "mlp", "binary": "cnn", "regression": "mlp", "ensemble": "mlp", "segmentation": "unet"}


def uri(run_ids: dict[str, str], name: str) -> str:
    """The job's MLflow Model: named after its model."""
    return f"runs:/{run_ids[name]}/{MODELS[name]}"


def jobs(data: Path) -> dict[str, list[str]]:
    """One tiny job per kind of head: run name -> overrides."""
    boston = ["dataset=boston", f"dataset.path={data / 'boston'}", "model.widths=[8]"]
    return {
        "multiclass": ["model.width=8"],  # digits: softmax over 10 classes
        "binary": ["dataset=image_folder", f"dataset.path={data / 'pets'}", "dataset.image_size=[12,12]",
                   "dataset.cache_dir=null", "model=cnn", "model.blocks=[{filters:4}]", "model.dense=[8]",
                   "trainer.batch_size=8"],  # one sigmoid unit on uint8 pixels
        "regression": boston,
        "ensemble": [*boston, "model.ensemble=2"],  # nnlab's MemberAverage layer
        "segmentation": ["dataset=scenes", "dataset.count=40", "dataset.canvas_size=[16,16]", "dataset.item_size=[6,8]",
                         "dataset.items=[1,2]", "model=unet", "model.depth=2", "model.filters=4",
                         "trainer.batch_size=8", "trainer.loss=ce_dice"],  # nnlab's Dice loss and metrics
    }


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[str, dict[str, str]]:
    """(store, run name -> run id): every job of `jobs` trained for one epoch into one private store."""
    data = tmp_path_factory.mktemp("data")
    make_boston(data / "boston" / "housing.data", rows=120)
    make_split_tree(data / "pets", ["cat", "dog"], train=16, test=6)
    store = f"sqlite:///{tmp_path_factory.mktemp('store') / 'mlflow.db'}"
    for name, overrides in jobs(data).items():
        with initialize_config_module(config_module="nnlab.conf", version_base="1.3"):
            cfg = compose(config_name="config", overrides=[
                f"tracking.uri={store}", f"tracking.experiment={EXPERIMENT}", f"tracking.run_name={name}",
                "trainer.verbose=0", "trainer.plot_model=false", "trainer.epochs=1", *overrides])
        app.run(cfg)
    client = MlflowClient(store)
    runs = client.search_runs([client.get_experiment_by_name(EXPERIMENT).experiment_id])
    mlflow.set_tracking_uri(store)
    return store, {r.info.run_name: r.info.run_id for r in runs}


def inputs_for(served, rows: int = 5) -> np.ndarray:
    """Random inputs of the signature's shape and dtype (uint8 pixels, float features)."""
    spec = served.metadata.get_input_schema().inputs[0]
    shape = (rows, *spec.shape[1:])
    rng = np.random.default_rng(0)
    if np.issubdtype(spec.type, np.integer):
        return rng.integers(0, 256, shape).astype(spec.type)
    return rng.normal(0, 1, shape).astype(spec.type)


def keras_file(store: str, run_id: str) -> keras.Model:
    """The run's model/model.keras, as `nnlab predict` loads it (nnlab imported: its custom objects are known)."""
    import nnlab.models  # registers MemberAverage
    import nnlab.tasks.losses  # noqa: F401  (registers Dice, PixelCrossEntropy, MeanDice)

    return keras.saving.load_model(MlflowClient(store).download_artifacts(run_id, "model/model.keras"), compile=False)


@pytest.mark.parametrize("name, output", [("multiclass", (-1, 10)), ("binary", (-1, 1)), ("regression", (-1, 1)),
                                          ("ensemble", (-1, 1)), ("segmentation", (-1, 16, 16, 11))])
def test_pyfunc_from_the_runs_uri_predicts_what_the_runs_keras_file_predicts(trained, name, output):
    store, run_ids = trained
    served = mlflow.pyfunc.load_model(uri(run_ids, name))
    assert served.metadata.get_output_schema().inputs[0].shape == output
    x = inputs_for(served)
    expected = keras_file(store, run_ids[name]).predict(x, verbose=0)
    np.testing.assert_allclose(served.predict(x), expected, rtol=1e-5, atol=1e-6)


def test_the_mlflow_model_is_uncompiled_and_made_of_keras_layers_only(trained):
    """What makes it load without nnlab: no compile config (the Dice loss, MeanDice), no MemberAverage."""
    _, run_ids = trained
    for name in ("ensemble", "segmentation"):
        folder = Path(mlflow.artifacts.download_artifacts(uri(run_ids, name)))
        config = json.loads(zipfile.ZipFile(folder / "data" / "model.keras").read("config.json"))
        text = json.dumps(config)
        assert not config.get("compile_config") and '"nnlab' not in text, name
        own = mlflow.artifacts.download_artifacts(f"runs:/{run_ids[name]}/model/model.keras")
        run_file = json.loads(zipfile.ZipFile(own).read("config.json"))
        assert '"nnlab' in json.dumps(run_file)  # the run's own file stays the full, compiled model


def test_the_mlflow_models_load_and_predict_where_nnlab_cannot_be_imported(trained, tmp_path):
    store, run_ids = trained
    names = ["multiclass", "binary", "regression", "ensemble", "segmentation"]
    for name in names:
        x = inputs_for(mlflow.pyfunc.load_model(uri(run_ids, name)))
        np.save(tmp_path / f"{name}.x.npy", x)
        np.save(tmp_path / f"{name}.expected.npy", keras_file(store, run_ids[name]).predict(x, verbose=0))
    script = tmp_path / "serve.py"
    script.write_text(f"""
import importlib.abc, sys
class NoNnlab(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "nnlab" or name.startswith("nnlab."):
            raise ImportError(f"nnlab is blocked in this process: {{name}}")
sys.meta_path.insert(0, NoNnlab())
import mlflow, numpy as np
mlflow.set_tracking_uri({store!r})
for name, model_uri in {[(n, uri(run_ids, n)) for n in names]!r}:
    got = mlflow.pyfunc.load_model(model_uri).predict(np.load(f"{tmp_path}/{{name}}.x.npy"))
    np.save(f"{tmp_path}/{{name}}.served.npy", got)
assert not [m for m in sys.modules if m.split(".")[0] == "nnlab"]
print("served without nnlab")
""")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "served without nnlab" in done.stdout
    for name in names:
        np.testing.assert_allclose(np.load(tmp_path / f"{name}.served.npy"), np.load(tmp_path / f"{name}.expected.npy"),
                                   rtol=1e-5, atol=1e-6, err_msg=name)


def test_the_runs_model_folder_keeps_model_keras_beside_the_mlflow_model(trained):
    """The MLflow Model (`runs:/<id>/mlp`) and the run's own model/ folder (model.keras) sit side by side; neither
    hides the other, and model/model.keras still downloads alone, as `nnlab predict` and `evaluate` read it."""
    store, run_ids = trained
    client = MlflowClient(store)
    run_id = run_ids["multiclass"]
    folder = Path(mlflow.artifacts.download_artifacts(uri(run_ids, "multiclass")))
    assert "MLmodel" in {p.name for p in folder.iterdir()}
    assert (folder / "data" / "model.keras").is_file()
    run_files = {a.path for a in client.list_artifacts(run_id, "model")}
    assert "model/model.keras" in run_files and "model/MLmodel" not in run_files
    alone = client.download_artifacts(run_id, "model/model.keras")
    assert Path(alone).name == "model.keras" and keras.saving.load_model(alone, compile=False).count_params() > 0
    logged = client.get_logged_model(client.get_run(run_id).outputs.model_outputs[0].model_id)
    assert not any(a.path == "model.keras" for a in client.list_logged_model_artifacts(logged.model_id))

"""Tiny finished runs for the predict and evaluate tests: trained in this process (as tests/test_app.py does), each
with its preprocessing.json (logged here when the app did not log it itself)."""

import tempfile
from pathlib import Path

import keras
from hydra import compose, initialize_config_module
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from nnlab.config import typed_config
from nnlab.data import load_dataset
from nnlab.job import app


def composed(*overrides: str):
    with initialize_config_module(config_module="nnlab.conf", version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


EXPERIMENT = "runs"


def train_run(store: str, *overrides: str, experiment: str = EXPERIMENT) -> str:
    """Train one job into `store`; returns its run id."""
    cfg = composed(f"tracking.uri={store}", f"tracking.experiment={experiment}", "trainer.verbose=0",
                   "trainer.plot_model=false", "trainer.checkpoint=false", *overrides)
    app.run(cfg)
    client = MlflowClient(store)
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    run = client.search_runs([experiment_id], order_by=["attributes.start_time DESC"], max_results=1)[0]
    if "preprocessing.json" not in {a.path for a in client.list_artifacts(run.info.run_id)}:
        log_preprocessing(client, run.info.run_id)
    return run.info.run_id


def log_preprocessing(client: MlflowClient, run_id: str) -> None:
    """What app.train_and_log logs once the lead wires it: the loader's Data.preprocessing_json()."""
    data = run_data(client, run_id)
    client.log_text(run_id, data.preprocessing_json(), "preprocessing.json")


def run_config(client: MlflowClient, run_id: str):
    with tempfile.TemporaryDirectory() as tmp:
        return typed_config(Path(client.download_artifacts(run_id, "config.yaml", tmp)).read_text())


def run_data(client: MlflowClient, run_id: str):
    """The run's dataset, loaded again from its own config (same seed: same splits)."""
    cfg = run_config(client, run_id)
    return load_dataset(cfg.dataset, seed=cfg.seed)


def run_model(client: MlflowClient, run_id: str):
    """The run's saved Keras model, loaded as nnlab predict loads it."""
    import nnlab.models  # noqa: F401  (registers MemberAverage)
    import nnlab.tasks.losses  # noqa: F401  (registers PixelCrossEntropy, Dice, MeanDice)

    with tempfile.TemporaryDirectory() as tmp:
        return keras.saving.load_model(client.download_artifacts(run_id, "model/model.keras", tmp), compile=False)


def copy_run(client: MlflowClient, run_id: str, experiment: str, artifacts: list[str], tags: dict) -> str:
    """A new run holding only `artifacts` of run `run_id` (e.g. a run logged before preprocessing.json)."""
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    new = client.create_run(experiment_id, tags=tags).info.run_id
    with tempfile.TemporaryDirectory() as tmp:
        for path in artifacts:
            local = client.download_artifacts(run_id, path, tmp)
            client.log_artifact(new, local, str(Path(path).parent) if "/" in path else None)
    client.set_terminated(new)
    return new


def config_yaml(client: MlflowClient, run_id: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        return OmegaConf.to_container(OmegaConf.load(client.download_artifacts(run_id, "config.yaml", tmp)))


def marker_plugin(folder: Path, name: str) -> tuple[Path, Path]:
    """(plugin, marker): a plugin file that appends a line to the marker file each time it is imported."""
    marker, plugin = folder / f"{name}.imported", folder / f"{name}.py"
    plugin.write_text(f"with open({str(marker)!r}, 'a') as f:\n    f.write('imported\\n')\n")
    return plugin, marker


def run_listing_plugin(client: MlflowClient, run_id: str, plugin: Path, experiment: str = EXPERIMENT) -> str:
    """A copy of finished run `run_id` whose stored config.yaml lists `plugin` (as someone who can write runs
    into a shared store could make it)."""
    tags = client.get_run(run_id).data.tags
    artifacts = ["model/model.keras"] + (["preprocessing.json"] if "preprocessing.json" in
                                         {a.path for a in client.list_artifacts(run_id)} else [])
    new = copy_run(client, run_id, experiment, artifacts, {"task": tags.get("task")})
    config = config_yaml(client, run_id) | {"plugins": [str(plugin)]}
    client.log_text(new, OmegaConf.to_yaml(config), "config.yaml")
    return new

"""A tiny image job under every Keras backend that is installed; JAX and PyTorch run with TensorFlow blocked."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
from data_fixtures import corrupt, make_split_tree
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.slow
BACKENDS = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}


@pytest.fixture(scope="module")
def pets(tmp_path_factory) -> Path:
    root = make_split_tree(tmp_path_factory.mktemp("data") / "pets", ["cat", "dog", "fox"], 16, 4, fmt="jpg",
                           size=(20, 14), modes=("RGB", "L"))
    corrupt(root / "train" / "dog" / "0002.jpg")
    return root


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_tiny_image_job_trains_and_logs_under_each_backend(backend, pets, tmp_path):
    if importlib.util.find_spec(BACKENDS[backend]) is None:
        pytest.skip(f"{backend} is not installed (make backends installs JAX and PyTorch)")
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    script = [str(Path(__file__).with_name("without_tensorflow.py"))] if backend != "tensorflow" else ["-m", "nnlab"]
    env = {**os.environ, "KERAS_BACKEND": backend, "NNLAB_CACHE_DIR": str(tmp_path / "cache"),
           "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("HYDRA_FULL_ERROR", None)
    result = subprocess.run(
        [sys.executable, *script, "dataset=image_folder", f"dataset.path={pets}", "dataset.image_size=[12,12]",
         "dataset.max_bad_fraction=0.1", "model=cnn", "model.blocks=[{filters:4}]", "model.dense=[8]",
         "augment.flip=horizontal", "augment.rotation=0.05", "trainer.epochs=2", "trainer.batch_size=8",
         f"tracking.uri={store}", "tracking.experiment=backends"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    client = MlflowClient(store)
    (run,) = client.search_runs([client.get_experiment_by_name("backends").experiment_id])
    assert run.info.status == "FINISHED" and run.data.tags["backend"] == backend
    assert run.data.params["data.skipped_images"] == "1" and run.data.params["augment.flip"] == "horizontal"
    assert 0.0 <= run.data.metrics["test_accuracy"] <= 1.0
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_loss")] == [1, 2]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"data_problems.txt", "model", "confusion_matrix.png"} <= artifacts


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_tiny_segmentation_job_trains_and_logs_under_each_backend(backend, tmp_path):
    """A U-Net on a few generated scenes, with the flip that moves image and mask together in the pipeline."""
    if importlib.util.find_spec(BACKENDS[backend]) is None:
        pytest.skip(f"{backend} is not installed (make backends installs JAX and PyTorch)")
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    script = [str(Path(__file__).with_name("without_tensorflow.py"))] if backend != "tensorflow" else ["-m", "nnlab"]
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("HYDRA_FULL_ERROR", None)
    result = subprocess.run(
        [sys.executable, *script, "dataset=scenes", "dataset.count=40", "dataset.canvas_size=[16,16]",
         "dataset.item_size=[6,8]", "dataset.items=[1,2]", "model=unet", "model.depth=2", "model.filters=4",
         "augment.flip=horizontal", "trainer.epochs=2", "trainer.batch_size=8", "trainer.loss=ce_dice",
         f"tracking.uri={store}", "tracking.experiment=backends", "trainer.plot_model=false"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    client = MlflowClient(store)
    (run,) = client.search_runs([client.get_experiment_by_name("backends").experiment_id])
    assert run.info.status == "FINISHED" and run.data.tags["task"] == "segmentation"
    assert 0.0 <= run.data.metrics["test_mean_iou"] <= 1.0
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_mean_iou")] == [1, 2]
    assert {"masks.png", "iou_per_class.md"} <= {a.path for a in client.list_artifacts(run.info.run_id)}

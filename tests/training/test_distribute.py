"""trainer.devices: data parallelism with the backend's own machinery (nnlab.training.distribute).

On this CPU, two virtual devices stand in for two GPUs: TensorFlow's CPU split into two logical devices, JAX's
host platform forced to two devices (XLA_FLAGS). Each must be set before the backend starts, so the jobs run in
a child process: the composed job in-process there, once on two devices and once on one, into a private store.
"""

import importlib.util
import json
import os
import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient

from nnlab.config.train import TrainerConfig
from nnlab.errors import ConfigError, NnlabError
from nnlab.training import distribute

# The child: split the CPU (TensorFlow: logical devices, before anything starts TensorFlow), run the same job
# on 2 devices and on 1, then load both saved models and print how far apart their weights are.
CHILD = """
import json, os, sys
if os.environ["KERAS_BACKEND"] == "tensorflow":
    import tensorflow as tf
    tf.config.set_logical_device_configuration(tf.config.list_physical_devices("CPU")[0],
                                               [tf.config.LogicalDeviceConfiguration()] * 2)
import numpy as np
from hydra import compose, initialize_config_module
from mlflow.tracking import MlflowClient
from nnlab.job import app

store, overrides = sys.argv[1], sys.argv[2:]
weights = {}
for devices in (2, 1):
    with initialize_config_module(config_module="nnlab.conf", version_base="1.3"):
        cfg = compose(config_name="config", overrides=[
            f"tracking.uri={store}", "tracking.experiment=devices", f"tracking.run_name=devices{devices}",
            "trainer.verbose=0", "trainer.plot_model=false", f"trainer.devices={devices}", *overrides])
    app.run(cfg)
import keras
client = MlflowClient(store)
for run in client.search_runs([client.get_experiment_by_name("devices").experiment_id]):
    path = client.download_artifacts(run.info.run_id, "model/model.keras")
    weights[run.info.run_name] = keras.saving.load_model(path, compile=False).get_weights()
gap = max(float(np.max(np.abs(a - b))) for a, b in zip(weights["devices2"], weights["devices1"]))
print("RESULT", json.dumps({"weight_gap": gap}))
"""
# digits, 300 examples: 270 train and 30 validate; a small MLP without dropout (masks would be drawn per
# replica); plain SGD, whose step is proportional to the gradient (Adam's is not: it would hide a gradient
# scaled wrongly by the replica count).
JOB = ["dataset.limit=300", "model.width=16", "optimizer=sgd", "optimizer.learning_rate=0.1"]


def two_device_jobs(backend: str, tmp_path, *overrides: str) -> tuple[dict, dict]:
    """The runs (by name) of the job on 2 and on 1 devices, and what the child printed."""
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3",
           "NNLAB_CACHE_DIR": str(tmp_path / "cache")}
    if backend == "jax":
        env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=2".strip()
    env.pop("HYDRA_FULL_ERROR", None)
    result = subprocess.run([sys.executable, "-c", CHILD, store, *JOB, *overrides], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-4000:]
    printed = json.loads(result.stdout.split("RESULT", 1)[1])
    client = MlflowClient(store)
    runs = client.search_runs([client.get_experiment_by_name("devices").experiment_id])
    return {r.info.run_name: r for r in runs}, printed


def assert_same_result(runs: dict, printed: dict, backend: str) -> None:
    """Two replicas each take half a batch and their gradients are averaged: the same update as one device's,
    computed in another order. float32 sums in another order differ in the last bits (~1e-7 relative), and two
    epochs of Adam carry that on without amplifying it much: 1e-4 is far above that and far below what any
    real difference (another batch order, a skipped or double-counted example, a wrong gradient scale) moves."""
    two, one = runs["devices2"], runs["devices1"]
    assert two.info.status == one.info.status == "FINISHED"
    assert two.data.tags["replicas"] == "2" and one.data.tags["replicas"] == "1"
    assert two.data.tags["backend"] == backend
    assert printed["weight_gap"] < 1e-4
    for name in ("test_loss", "test_accuracy", "best_val_loss"):
        assert two.data.metrics[name] == pytest.approx(one.data.metrics[name], rel=1e-4, abs=1e-5), name


@pytest.mark.slow
def test_two_tensorflow_devices_train_as_one_does(tmp_path):
    """MirroredStrategy over two logical CPU devices, and the model saved under the strategy loads (model.keras;
    the MLflow Model is logged from it too). Full batches (all 270 in one, 135 a replica): under a strategy Keras
    opens the training data once more before the first epoch to build the model, which moves tf.data's seeded
    reshuffle on by one epoch, so with several batches the two runs would see their batches in other orders."""
    runs, printed = two_device_jobs("tensorflow", tmp_path, "trainer.batch_size=512", "trainer.epochs=4")
    assert_same_result(runs, printed, "tensorflow")
    assert runs["devices2"].data.metrics["loss"] == pytest.approx(runs["devices1"].data.metrics["loss"], rel=1e-4)


@pytest.mark.slow
def test_two_jax_devices_train_as_one_does(tmp_path):
    """DataParallel over two forced host devices, in batches of 32 with a short last batch of odd size (269
    training examples: 8 x 32 + 13, which goes in twice); validation (30) and test sets in batches whose last
    is not split evenly either."""
    if importlib.util.find_spec("jax") is None:
        pytest.skip("jax is not installed (make backends installs it)")
    runs, printed = two_device_jobs("jax", tmp_path, "dataset.limit=299", "trainer.batch_size=32",
                                    "trainer.epochs=2")
    assert runs["devices2"].data.params["data.train_size"] == "269"
    assert_same_result(runs, printed, "jax")


# In-process: the sentences, without starting any backend's devices.

def test_torch_backend_refuses_several_devices(monkeypatch):
    monkeypatch.setattr(distribute.keras.backend, "backend", lambda: "torch")
    refused = r"trainer.devices=2: Keras has no data-parallel training on the torch backend; run with KERAS_BACKEND=jax"
    with pytest.raises(NnlabError, match=refused), distribute.data_parallel(2, 64):
        pass


def test_more_devices_than_visible_lists_what_is_visible():
    with pytest.raises(NnlabError, match=r"asks for 4 devices, but tensorflow sees 2: /GPU:0, /GPU:1; set "
                                         r"trainer.devices=2 or fewer"):
        distribute.choose(4, "tensorflow", ["/GPU:0", "/GPU:1"], accelerators=True)


@pytest.mark.parametrize("backend, how", [("jax", "XLA_FLAGS=--xla_force_host_platform_device_count=2"),
                                          ("tensorflow", "tf.config.set_logical_device_configuration")])
def test_one_cpu_says_how_to_simulate_several(backend, how):
    with pytest.raises(NnlabError, match="sees no GPU and 1 CPU device") as err:
        distribute.choose(2, backend, ["cpu:0"], accelerators=False)
    assert how in str(err.value)


def test_one_device_changes_nothing(monkeypatch):
    monkeypatch.setattr(distribute, "visible_devices", lambda backend: pytest.fail("looked for devices"))
    for devices in (None, 1):
        with distribute.data_parallel(devices, 63) as parallel:
            assert parallel.replicas == 1 and parallel.callbacks == []


def test_jax_needs_a_batch_that_splits_evenly(monkeypatch):
    monkeypatch.setattr(distribute.keras.backend, "backend", lambda: "jax")
    monkeypatch.setattr(distribute, "visible_devices", lambda backend: (["cpu:0", "cpu:1"], False))
    uneven = "trainer.batch_size=63 does not split evenly over trainer.devices=2"
    with pytest.raises(NnlabError, match=uneven), distribute.data_parallel(2, 63):
        pass


def test_devices_is_validated_like_the_other_trainer_keys():
    with pytest.raises(ConfigError, match="trainer.devices"):
        TrainerConfig(devices=0)
    assert TrainerConfig().devices is None


def test_a_short_batch_goes_in_as_many_copies_as_devices():
    import numpy as np

    from nnlab.data import pipeline

    x, y = np.arange(10).reshape(10, 1), np.arange(10)
    before = pipeline.even_split(2)
    try:
        train = pipeline.ArrayBatches(x, y, 4, shuffle=True, seed=0)
        val = pipeline.ArrayBatches(x, y, 4, shuffle=False)
    finally:
        pipeline.even_split(before)
    assert [len(train[i][0]) for i in range(3)] == [4, 4, 2]  # 10 = 4 + 4 + 2: even
    odd = pipeline.ArrayBatches(x[:9], y[:9], 4, shuffle=True, seed=0)
    odd.split = 2
    last_x, last_y = odd[2]
    assert len(last_x) == 2 and sorted(last_x[:, 0]) == sorted(last_y)  # 9 = 4 + 4 + 1: one row, twice
    assert last_x[0, 0] == last_x[1, 0]
    assert val.split == 1 and len(val[2][0]) == 2  # validation batches stay as they are


def test_the_slurm_preset_for_several_gpus_runs_one_task_a_job(cli, tmp_path):
    result = cli("hydra/launcher=slurm_gpus", "hydra.launcher.gpus_per_node=4", "--cfg", "hydra", "-p",
                 "hydra.launcher", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "SlurmLauncher" in result.stdout and "gpus_per_node: 4" in result.stdout
    assert "tasks_per_node: 1" in result.stdout and "nodes: 1" in result.stdout

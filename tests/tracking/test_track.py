from pathlib import Path

import keras
import pytest
from mlflow.tracking import MlflowClient

from nnlab.config import TrackingConfig
from nnlab.files import NoSpaceError
from nnlab.tracking import logged_model, track


def tracking(store, **kw):
    return TrackingConfig(uri=store, experiment="unit", **kw)


def only_run(store):
    client = MlflowClient(store)
    runs = client.search_runs([client.get_experiment_by_name("unit").experiment_id])
    assert len(runs) == 1
    return client, runs[0]


def test_flatten_keeps_lists_whole():
    flat = track.flatten({"model": {"widths": [256, 128], "blocks": [{"filters": 32}]}, "seed": 1, "e": {}})
    assert flat == {"model.widths": "[256, 128]", "model.blocks": "[{'filters': 32}]", "seed": "1", "e": "{}"}


def test_a_finished_run_keeps_params_tags_metrics_and_artifacts(store):
    with track.start_run(tracking(store, tags={"lab": "3"}), {"dataset": "digits"}) as run:
        run.params({"model.widths": [1, 2]})
        run.metrics({"loss": 0.5}, step=1)
        run.metrics({"loss": 0.25, "skipped": float("nan")}, step=2)
        run.text("hello", "notes/hello.txt")
        model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
        run.model(model)
    client, result = only_run(store)
    assert result.info.status == "FINISHED"
    assert result.data.params["model.widths"] == "[1, 2]"
    assert result.data.tags["dataset"] == "digits" and result.data.tags["lab"] == "3"
    assert [m.value for m in client.get_metric_history(result.info.run_id, "loss")] == [0.5, 0.25]
    assert "skipped" not in result.data.metrics
    paths = {a.path for a in client.list_artifacts(result.info.run_id, "model")}
    assert "model/model.keras" in paths and "model/model.h5" not in paths  # beside the MLflow Model's files


def test_an_exception_marks_the_run_failed_with_the_error(store):
    with pytest.raises(RuntimeError), track.start_run(tracking(store), {}):
        raise RuntimeError("out of cheese")
    client, result = only_run(store)
    assert result.info.status == "FAILED"
    assert result.data.tags["error"] == "RuntimeError: out of cheese"
    assert "error.txt" in {a.path for a in client.list_artifacts(result.info.run_id)}


def test_epoch_logger_logs_each_epoch_with_the_learning_rate(store):
    import numpy as np

    x, y = np.ones((8, 2), "float32"), np.ones((8, 1), "float32")
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    with track.start_run(tracking(store), {}) as run:
        model.fit(x, y, epochs=3, verbose=0, callbacks=[run.epoch_logger()])
    client, result = only_run(store)
    steps = [m.step for m in client.get_metric_history(result.info.run_id, "loss")]
    assert steps == [1, 2, 3]
    assert result.data.metrics["lr"] == pytest.approx(0.01)


def test_a_run_records_its_host_process_and_a_first_heartbeat(store):
    import os
    import socket
    import time

    before = int(time.time())
    with track.start_run(tracking(store), {}):
        pass
    _, result = only_run(store)
    tags = result.data.tags
    assert tags[track.HOST_TAG] == socket.gethostname() and tags[track.PID_TAG] == str(os.getpid())
    assert before <= int(tags[track.HEARTBEAT_TAG]) <= time.time()
    assert abs(float(tags[track.PID_STARTED_TAG]) - track.process_start_time(os.getpid())) <= 1


def test_the_heartbeat_rides_with_the_metrics_at_most_once_a_minute(store):
    import time

    before = int(time.time())
    with track.start_run(tracking(store), {}) as run:
        run.client.set_tag(run.run_id, track.HEARTBEAT_TAG, "0")
        run.metrics({"loss": 1.0}, step=1)  # within the minute: no refresh
        assert run.client.get_run(run.run_id).data.tags[track.HEARTBEAT_TAG] == "0"
        run.last_beat -= track.HEARTBEAT_EVERY_S + 1
        run.metrics({"loss": 0.5}, step=2)
        refreshed = run.client.get_run(run.run_id).data.tags[track.HEARTBEAT_TAG]
        run.client.set_tag(run.run_id, track.HEARTBEAT_TAG, "1")
        run.metrics({"loss": 0.25}, step=3)
        assert run.client.get_run(run.run_id).data.tags[track.HEARTBEAT_TAG] == "1"
    assert before <= int(refreshed) <= time.time()  # the time of the refresh, not a stale value


def test_the_model_export_is_flushed_to_disk_before_its_rename(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = logged_model.os.fsync, logged_model.os.replace
    monkeypatch.setattr(logged_model.os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(logged_model.os, "replace", lambda a, b: (events.append(("replace", str(b))), real_replace(a, b))[1])
    source = tmp_path / "model.keras"
    source.write_bytes(b"weights" * 1000)
    logged_model.export(source, tmp_path / "export")
    target = tmp_path / "export" / "model.keras"
    assert target.read_bytes() == source.read_bytes()
    assert events[:2] == ["fsync", ("replace", str(target))]
    assert [p.name for p in (tmp_path / "export").iterdir()] == ["model.keras"]  # no .partial left


def test_a_failed_model_export_leaves_neither_a_partial_nor_a_target(tmp_path, monkeypatch):
    def full_disk(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(logged_model.os, "fsync", full_disk)
    source = tmp_path / "model.keras"
    source.write_bytes(b"weights")
    with pytest.raises(OSError, match="No space"):
        logged_model.export(source, tmp_path / "export")
    assert list((tmp_path / "export").iterdir()) == []


def logged_models(client, run):
    return client.search_logged_models([run.info.experiment_id])


def test_a_saved_model_is_also_an_mlflow_model_with_signature_and_input_example(store):
    import mlflow
    import numpy as np

    x = np.arange(12, dtype="float32").reshape(6, 2)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3, activation="softmax")])
    with track.start_run(tracking(store), {}) as run:
        model_id = run.model(model, example=x[:2])
    client, result = only_run(store)
    (logged,) = logged_models(client, result)
    assert logged.model_id == model_id and logged.name == "model" and str(logged.status) == "READY"
    assert logged.source_run_id == result.info.run_id
    assert [o.model_id for o in result.outputs.model_outputs] == [model_id]
    info = mlflow.models.get_model_info(f"runs:/{result.info.run_id}/model")
    assert info.flavors.keys() >= {"keras", "python_function"}
    assert info.signature.inputs.to_dict()[0]["tensor-spec"] == {"dtype": "float32", "shape": (-1, 2)}
    assert info.signature.outputs.to_dict()[0]["tensor-spec"] == {"dtype": "float32", "shape": (-1, 3)}
    folder = mlflow.artifacts.download_artifacts(f"models:/{model_id}")
    assert np.array_equal(mlflow.models.Model.load(folder).load_input_example(folder), x[:2])
    served = mlflow.pyfunc.load_model(f"runs:/{result.info.run_id}/model").predict(x)
    np.testing.assert_allclose(served, model.predict(x, verbose=0), rtol=1e-6)
    requirements = (Path(folder) / "requirements.txt").read_text()
    assert f"keras=={keras.__version__}" in requirements.split()  # pinned, without a subprocess inferring them


def test_a_failed_mlflow_model_save_leaves_neither_model_files_nor_a_logged_model(store, monkeypatch):
    def broken(path, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(logged_model.KERAS_FLAVOR, "save_model", broken)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    with pytest.raises(NoSpaceError, match="No space left to save the model"), \
            track.start_run(tracking(store), {}) as run:
        run.model(model, formats=("keras", "h5"))
    client, result = only_run(store)
    assert result.info.status == "FAILED"
    assert not [a for a in client.list_artifacts(result.info.run_id) if a.path == "model"]
    assert list(logged_models(client, result)) == []  # created by MLflow before the save, then deleted


def test_data_splits_are_logged_as_dataset_inputs_with_context_source_and_digest(store, tmp_path):
    import numpy as np

    rng = np.random.default_rng(0)
    splits = {"train": (rng.random((20, 3)), np.arange(20)), "val": None, "test": (rng.random((5, 3)), np.arange(5))}
    with track.start_run(tracking(store), {}) as run:
        run.datasets(splits, "boston", str(tmp_path))
        run.datasets({"train": splits["train"]}, "digits", "bundled")
    _, result = only_run(store)
    found = {i.dataset.name: i for i in result.inputs.dataset_inputs}
    assert set(found) == {"boston-train", "boston-test", "digits-train"}  # no validation split: none logged
    assert [t.value for t in found["boston-train"].tags] == ["training"]
    assert [t.value for t in found["boston-test"].tags] == ["test"]
    train = found["boston-train"].dataset
    assert train.source_type == "local" and str(tmp_path) in train.source
    assert found["digits-train"].dataset.source_type == "code" and "bundled" in found["digits-train"].dataset.source
    assert found["boston-train"].dataset.digest == track.array_digest(*splits["train"])
    assert '"features_shape": [20, 3]' in found["boston-train"].dataset.profile



def test_a_reopened_run_sends_only_dataset_inputs_it_lacks(store, tmp_path, monkeypatch):
    """`nnlab resume` logs the data of the run it reopens again: an input the run has (same name, digest and
    context) is not sent again, so no store lists it twice (MLflow's SQL and file stores dedupe on their own;
    not every store does); changed data is sent."""
    import numpy as np

    rng = np.random.default_rng(0)
    splits = {"train": (rng.random((20, 3)), np.arange(20)), "test": (rng.random((5, 3)), np.arange(5))}
    changed = {"train": splits["train"], "test": (splits["test"][0] + 1, splits["test"][1])}
    with track.start_run(tracking(store), {}) as run:
        run.datasets(splits, "boston", str(tmp_path))
    sent = []
    with track.start_run(tracking(store), {}, run_id=run.run_id) as again:
        log_inputs = again.client.log_inputs
        monkeypatch.setattr(again.client, "log_inputs", lambda run_id, datasets: (
            sent.append([(d.dataset.name, d.dataset.digest) for d in datasets]), log_inputs(run_id, datasets)))
        again.datasets(splits, "boston", str(tmp_path))
        again.datasets(changed, "boston", str(tmp_path))
    assert sent == [[("boston-test", track.array_digest(*changed["test"]))]]
    _, result = only_run(store)
    assert len(result.inputs.dataset_inputs) == 3  # train once, test before and after the change


def test_a_dataset_another_run_inserted_first_is_linked_on_retry_and_other_errors_are_raised(store, monkeypatch):
    """Two sweep jobs that log the same data at once both look the dataset up, find none and insert it; the later
    fails on the store's unique key (seen in CI against the team server). The retry finds the row and links it."""
    import numpy as np
    from mlflow.exceptions import MlflowException

    race = MlflowException('BAD_REQUEST: (psycopg.errors.UniqueViolation) duplicate key value violates unique '
                           'constraint "dataset_pk" DETAIL: Key (experiment_id, name, digest)=(1, digits-train, b9) '
                           'already exists.')
    splits = {"train": (np.ones((4, 2)), np.arange(4))}
    with track.start_run(tracking(store), {}) as run:
        log_inputs, calls = run.client.log_inputs, []

        def lose_the_first_race(run_id, datasets):
            calls.append(run_id)
            if len(calls) == 1:
                raise race
            return log_inputs(run_id, datasets)

        monkeypatch.setattr(run.client, "log_inputs", lose_the_first_race)
        run.datasets(splits, "digits", "bundled")
        monkeypatch.setattr(run.client, "log_inputs", lambda *a, **k: (_ for _ in ()).throw(MlflowException("down")))
        with pytest.raises(MlflowException, match="down"):
            run.datasets({"test": splits["train"]}, "digits", "bundled")
    assert len(calls) == 2
    _, result = only_run(store)
    assert [i.dataset.name for i in result.inputs.dataset_inputs] == ["digits-train"]


def test_the_dataset_digest_follows_the_data_and_hashes_a_bounded_sample_of_big_image_arrays(monkeypatch):
    import hashlib

    import numpy as np

    images = np.random.default_rng(0).integers(0, 256, (60000, 28, 28), dtype=np.uint8)
    labels = np.arange(60000) % 10
    hashed, sha256 = [], hashlib.sha256

    class Counting:
        def __init__(self):
            self.sha = sha256()

        def update(self, data):
            hashed.append(len(data))
            self.sha.update(data)

        def hexdigest(self):
            return self.sha.hexdigest()

    with monkeypatch.context() as patch:
        patch.setattr(hashlib, "sha256", Counting)
        digest = track.array_digest(images, labels)
    assert images.nbytes > 2 * track.DIGEST_SAMPLE_BYTES  # big enough to be sampled
    assert sum(hashed) <= track.DIGEST_SAMPLE_BYTES + labels.nbytes + 200  # a sample of the images, every label
    assert digest == track.array_digest(images.copy(), labels.copy())
    assert digest != track.array_digest(images[:-1], labels[:-1])  # a shape
    assert digest != track.array_digest(images, np.roll(labels, 1))  # the targets
    changed = images.copy()
    changed[-1, 0, 0] ^= 1  # the last row is always sampled
    assert digest != track.array_digest(changed, labels)


def test_a_note_becomes_the_runs_description(store):
    with track.start_run(tracking(store), {}) as run:
        run.note("cnn on fashion_mnist: test accuracy 92.6%")
    _, result = only_run(store)
    assert result.data.tags["mlflow.note.content"] == "cnn on fashion_mnist: test accuracy 92.6%"


@pytest.mark.parametrize("switch", [True, False])
def test_tracking_system_metrics_switches_mlflows_system_metrics(store, monkeypatch, switch):
    import time

    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.2")
    monkeypatch.delenv("MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING", raising=False)
    with track.start_run(tracking(store, system_metrics=switch), {}):
        time.sleep(1.5)
    _, result = only_run(store)
    system = {k for k in result.data.metrics if k.startswith("system/")}
    assert ("system/cpu_utilization_percentage" in system) is switch
    assert bool(system) is switch

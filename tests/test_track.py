import keras
import pytest
from mlflow.tracking import MlflowClient

from nnlab import track
from nnlab.config import TrackingConfig


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


def test_relative_sqlite_uri_becomes_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert track.resolve_uri("sqlite:///mlflow.db") == f"sqlite:///{tmp_path}/mlflow.db"
    assert track.resolve_uri("sqlite:////abs/x.db") == "sqlite:////abs/x.db"
    assert track.resolve_uri("http://127.0.0.1:5000") == "http://127.0.0.1:5000"


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
    assert paths == {"model/model.keras"}


def test_an_exception_marks_the_run_failed_with_the_error(store):
    with pytest.raises(RuntimeError):
        with track.start_run(tracking(store), {}):
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
    import time

    assert abs(int(refreshed) - time.time()) < 60


def test_the_model_export_is_flushed_to_disk_before_its_rename(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = track.os.fsync, track.os.replace
    monkeypatch.setattr(track.os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(track.os, "replace", lambda a, b: (events.append(("replace", str(b))), real_replace(a, b))[1])
    source = tmp_path / "model.keras"
    source.write_bytes(b"weights" * 1000)
    track.export(source, tmp_path / "export")
    target = tmp_path / "export" / "model.keras"
    assert target.read_bytes() == source.read_bytes()
    assert events[:2] == ["fsync", ("replace", str(target))]
    assert [p.name for p in (tmp_path / "export").iterdir()] == ["model.keras"]  # no .partial left


def test_a_failed_model_export_leaves_neither_a_partial_nor_a_target(tmp_path, monkeypatch):
    def full_disk(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(track.os, "fsync", full_disk)
    source = tmp_path / "model.keras"
    source.write_bytes(b"weights")
    with pytest.raises(OSError, match="No space"):
        track.export(source, tmp_path / "export")
    assert list((tmp_path / "export").iterdir()) == []

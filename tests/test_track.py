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

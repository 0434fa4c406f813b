"""What a run and its model are called, and the model's summary beside them: a single run is named after its
experiment preset, else its model and dataset (a sweep's jobs after their swept values: tests/job/test_sweep.py); its
MLflow Model after its model; model_summary.txt keeps every column of Keras's summary."""

import os

import keras
import pytest
from mlflow.tracking import MlflowClient

from nnlab.job.run_facts import summary
from nnlab.reports.register import logged_model_id
from nnlab.tracking.store import run_text

QUICK = ("trainer.epochs=1", "trainer.verbose=0", "trainer.plot_model=false", "trainer.checkpoint=false",
         "hydra/job_logging=none", "hydra/hydra_logging=none")


def train(nnlab_cli, store: str, *overrides: str):
    """`nnlab OVERRIDES` in this process: (client, the experiment's newest run, what the job printed)."""
    code, out, err = nnlab_cli(*QUICK, f"tracking.uri={store}", "tracking.experiment=names", *overrides)
    assert code == 0, err[-3000:]
    client = MlflowClient(store)
    experiment = client.get_experiment_by_name("names").experiment_id
    run = client.search_runs([experiment], order_by=["attributes.start_time DESC"], max_results=1)[0]
    return client, run, out


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # Hydra's outputs/ folder
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def test_a_plain_run_is_named_after_its_model_and_dataset_and_its_mlflow_model_after_its_model(nnlab_cli, in_tmp):
    client, run, out = train(nnlab_cli, in_tmp, "model.width=8", "dataset.limit=200")
    assert run.info.run_name == "mlp_digits"
    assert f"model: runs:/{run.info.run_id}/mlp" in out  # where the job says its model is
    (output,) = run.outputs.model_outputs
    logged = client.get_logged_model(output.model_id)
    assert logged.name == "mlp" and logged.source_run_id == run.info.run_id
    assert logged_model_id(client, run) == output.model_id  # what `nnlab report --register` registers
    text = run_text(client, run.info.run_id, "model_summary.txt")
    assert "Param #" in text and "Total params:" in text


def test_a_preset_run_is_named_after_its_preset_and_a_run_name_wins(nnlab_cli, in_tmp, idx_dir):
    data = (f"dataset.path={idx_dir}", "dataset.download=false", "model.widths=[8]", "trainer.save_model=false")
    _, run, out = train(nnlab_cli, in_tmp, "+experiment=fashion_mlp", *data)
    assert run.info.run_name == "fashion_mlp" and "model: runs:/" not in out  # trainer.save_model=false
    _, run, _ = train(nnlab_cli, in_tmp, "+experiment=fashion_mlp", "tracking.run_name=mine", *data)
    assert run.info.run_name == "mine"


def test_the_model_summary_keeps_every_column_of_a_functional_and_a_nested_model(monkeypatch):
    monkeypatch.delenv("COLUMNS", raising=False)  # no terminal: rich would cut each line at 80 characters
    inputs = keras.Input((12,), name="features")
    left, right = keras.layers.Dense(4, name="left")(inputs), keras.layers.Dense(4, name="right")(inputs)
    head = keras.Sequential([keras.layers.Dense(6, name="inner_dense"), keras.layers.Dense(3, name="inner_out")],
                            name="head")
    model = keras.Model(inputs, head(keras.layers.Concatenate(name="both")([left, right])))
    model.get_layer("left").trainable = False
    text = summary(model)
    header = next(line for line in text.splitlines() if "Layer (type)" in line)
    for column in ("Output Shape", "Param #", "Connected to", "Trainable"):
        assert column in header, column
    both = next(line for line in text.splitlines() if "both (Concatenate)" in line)
    assert "left[0][0]" in both and "right[0][0]" in both  # Connected to, in full
    inner = next(line for line in text.splitlines() if "inner_dense (Dense)" in line)
    assert "54" in inner.split("│")[3]  # the nested model's own layers, with their counts: 8 * 6 + 6
    frozen = next(line for line in text.splitlines() if "left (Dense)" in line)
    assert frozen.split("│")[5].strip() == "N"
    assert max(len(line) for line in text.splitlines()) > 80
    assert "COLUMNS" not in os.environ  # the width was set for the summary only

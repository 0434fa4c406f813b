"""nnlab's five exercise scripts: the platform's functions, each run for one epoch on a tiny generated dataset in
the platform's layout (written by `nnlab course prepare` from generated copies)."""

import ast
import importlib

import numpy as np
import pytest
from fixtures.course_layouts import FRUITS, faces_layout, fashion_layout, fruits_layout

from nnlab.course.labs import EXERCISES, script_path

PLATFORM = ["load_train", "load_test", "create_model", "train_model"]
TRAIN_MODEL_ARGS = ["model", "train_data", "test_data", "batch_size", "epochs", "steps_per_epoch", "validation_steps"]


def exercise(name: str):
    return importlib.import_module(f"nnlab.course.exercises.{name}")


def first_batch(data):
    return next(iter(data))


@pytest.mark.parametrize("name", sorted(EXERCISES))
def test_each_script_defines_the_platform_functions_with_its_signature_and_no_tensorflow(name):
    tree = ast.parse(script_path(name).read_text())
    functions = {node.name: node for node in tree.body if isinstance(node, ast.FunctionDef)}
    assert set(PLATFORM) <= set(functions)
    train = functions["train_model"].args
    assert [a.arg for a in train.args] == TRAIN_MODEL_ARGS
    assert [ast.literal_eval(d) for d in train.defaults[:1] + train.defaults[2:]] == [None, None, None]
    assert [a.arg for a in functions["create_model"].args.args] == ["input_shape"]
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))
                for alias in (node.names if isinstance(node, ast.Import) else [ast.alias(node.module or "")])}
    assert "tensorflow" not in imported, "any Keras backend: no TensorFlow import"


@pytest.mark.parametrize("name", ["exer_1", "exer_2"])
def test_fashion_scripts_read_the_npy_layout_and_train_an_epoch(name, tmp_path):
    script = exercise(name)
    path = str(fashion_layout(tmp_path, n_train=60, n_test=30)) + "/"  # the platform's trailing slash
    train_data, test_data = script.load_train(path), script.load_test(path)
    x, _ = first_batch(train_data)
    assert tuple(x.shape)[1:] == (28, 28, 1) and "uint8" in str(x.dtype)  # raw pixels: the model scales them
    assert sum(len(b[1]) for b in test_data) == 30
    model = script.create_model(tuple(x.shape)[1:])
    assert model.output_shape == (None, 10)
    trained = script.train_model(model, train_data, test_data, epochs=1)
    assert trained is model and len(model.history.history["val_accuracy"]) == 1
    assert np.allclose(model.predict(test_data, verbose=0).sum(axis=1), 1, atol=1e-4)


@pytest.mark.parametrize("name", ["exer_3", "exer_4"])
def test_fruit_scripts_read_class_folders_split_a_quarter_and_train_an_epoch(name, tmp_path, monkeypatch):
    monkeypatch.setenv("NNLAB_CACHE_DIR", str(tmp_path / "cache"))
    script = exercise(name)
    monkeypatch.setattr(script, "IMAGE_SIZE", (16, 16))
    path = str(fruits_layout(tmp_path, train=12, test=4)) + "/"  # 16 photos a class
    train_data, test_data = script.load_train(path), script.load_test(path)
    assert script.CLASS_NAMES == FRUITS
    test_labels = np.concatenate([np.asarray(b[1]) for b in test_data])
    assert np.bincount(test_labels).tolist() == [4, 4, 4]  # a stratified quarter of each class
    x, _ = first_batch(train_data)
    model = script.create_model(tuple(x.shape)[1:])
    assert model.output_shape == (None, 3)
    trained = script.train_model(model, train_data, test_data, epochs=1)
    assert trained is model and len(model.history.history["accuracy"]) == 1


def test_the_faces_script_loads_builds_and_trains(tmp_path, monkeypatch):
    monkeypatch.setenv("NNLAB_CACHE_DIR", str(tmp_path / "cache"))
    script = exercise("exer_5")
    monkeypatch.setattr(script, "IMAGE_SIZE", (24, 24))
    root = str(faces_layout(tmp_path, n=40)) + "/"
    train_data, test_data = script.load_train(root, batch_size=8), script.load_test(root, batch_size=8)
    x, _ = first_batch(train_data)
    assert tuple(x.shape)[1:] == (24, 24, 3) and "uint8" in str(x.dtype)  # raw pixels; the model scales
    test_ages = np.concatenate([np.asarray(b[1]) for b in test_data])
    assert len(test_ages) == 10  # the course's 25% test share of 40
    model = script.create_model((24, 24, 3))
    assert model.output_shape == (None, 1) and model.loss.name == "huber_loss"
    trained = script.train_model(model, train_data, test_data, batch_size=None, epochs=2)
    assert trained is model and len(model.history.history["val_mae"]) == 2
    assert np.isfinite(model.predict(test_data, verbose=0)).all()


def test_the_faces_functions_stay_importable_from_nnlab_course():
    from nnlab import course
    from nnlab.course.exercises import exer_5

    assert course.load_train is exer_5.load_train and course.create_model is exer_5.create_model
    assert course.load_split is exer_5.load_split


def test_the_scripts_cosine_warms_up_then_ends_each_run_near_zero():
    from nnlab.course.kit import cosine

    schedule = cosine(1.0, epochs=4, warmup=1).schedule
    rates = [schedule(epoch, 0.0) for epoch in range(4)]
    assert rates[0] == 0.5 and rates[1] > rates[2] > rates[3]  # a warm-up epoch at half, then falling
    assert rates[3] < 0.1 and cosine(1.0, epochs=2).schedule(1, 0.0) < 0.2  # short runs end low too

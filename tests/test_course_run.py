"""`nnlab course run|init`: grading scripts the platform's way, in MLflow; bad scripts get one sentence."""

import sys
from pathlib import Path

import pytest
from fixtures.course_layouts import fashion_layout, fruits_layout
from mlflow.tracking import MlflowClient

from nnlab.course.labs import script_path

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture
def nnlab(nnlab_cli, monkeypatch, tmp_path):
    """`nnlab ARGS` in this process, in tmp_path: (exit status, stdout, nnlab's stderr lines)."""
    monkeypatch.chdir(tmp_path)

    def call(*args: str) -> tuple[int, str, list[str]]:
        code, out, err = nnlab_cli(*args)
        return code, out, [line for line in err.splitlines() if line.startswith("nnlab")]

    return call


def course_runs(store: str) -> list:
    client = MlflowClient(store)
    experiment = client.get_experiment_by_name("course")
    return client.search_runs([experiment.experiment_id]) if experiment else []


def artifacts(client: MlflowClient, run_id: str, path: str | None = None) -> set[str]:
    found = set()
    for item in client.list_artifacts(run_id, path):
        found |= artifacts(client, run_id, item.path) if item.is_dir else {item.path}
    return found


def write_script(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(text)
    return folder / name


def test_a_course_style_flow_script_passes_and_its_run_holds_epochs_script_and_figures(nnlab, tmp_path, store):
    data = fruits_layout(tmp_path, train=12, test=4)
    code, out, errors = nnlab("course", "run", str(FIXTURES / "course_style_fruits.py"), str(data), "--lab", "exer_3",
                              "--uri", store)
    assert code == 0, errors
    assert "nnlab course: exer_3 (fruits, CNN): PASS: test accuracy 100.00% (bar: accuracy >= 90%)" in out
    (run,) = course_runs(store)
    client = MlflowClient(store)
    assert run.info.status == "FINISHED" and run.data.tags["course.verdict"] == "PASS"
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_acc")]
    assert steps == list(range(1, 9))  # the script's own 8 epochs, logged by the callback the grader attached
    assert run.data.metrics["test_accuracy"] == 1.0 and run.data.params["test_size"] == "12"  # the flow's subset
    assert run.data.metrics["script_seconds"] > 0 and run.data.params["input_shape"] == "(16, 16, 3)"
    assert {"script/course_style_fruits.py", "confusion_matrix.png", "curves.png"} <= artifacts(client, run.info.run_id)
    assert "test_recall_Kiwi" in run.data.metrics  # the class names come from the flow


def test_a_weak_script_fails_the_bar_on_the_npy_layout_without_load_test(nnlab, tmp_path, store, monkeypatch):
    data = fashion_layout(tmp_path, n_train=40, n_test=30)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)  # the store as `nnlab report` finds it, without --uri
    code, out, errors = nnlab("course", "run", str(FIXTURES / "course_style_fashion.py"), str(data), "--lab",
                              "exer_1", "--epochs", "1")
    assert code == 1, errors  # a FAIL exits 1: a script or CI job can tell
    assert "nnlab course: exer_1 (Fashion-MNIST, fully connected): FAIL: test accuracy" in out
    (run,) = course_runs(store)
    assert run.info.status == "FINISHED" and run.data.tags["course.verdict"] == "FAIL"
    assert run.data.metrics["test_accuracy"] < 0.85 and run.data.metrics["epochs_run"] == 1  # --epochs imposed
    assert run.data.params["test_size"] == "30"  # test_features.npy, flattened and scaled like the training data
    assert "test_recall_Sneaker" in run.data.metrics  # Fashion-MNIST's class names


def test_nnlabs_own_script_is_graded_with_its_tf_data_batches(nnlab, tmp_path, store):
    data = fashion_layout(tmp_path, n_train=60, n_test=30)
    code, out, errors = nnlab("course", "run", str(script_path("exer_1")), str(data), "--epochs", "1", "--uri", store)
    assert code == (0 if ": PASS: " in out else 1), errors
    assert "nnlab course: exer_1 (Fashion-MNIST, fully connected): " in out and "1 epoch" in out
    (run,) = course_runs(store)
    assert run.data.params["input_shape"] == "(28, 28, 1)" and run.data.params["test_size"] == "30"
    assert [m.step for m in MlflowClient(store).get_metric_history(run.info.run_id, "lr")] == [1]


def test_a_script_without_create_model_gets_one_sentence_exit_2_and_no_run(nnlab, tmp_path, store):
    text = (FIXTURES / "course_style_fashion.py").read_text().replace("def create_model(", "def build_model(")
    script = write_script(tmp_path / "mine", "exer_1.py", text)
    code, _, errors = nnlab("course", "run", str(script), str(fashion_layout(tmp_path)), "--uri", store)
    assert code == 2
    assert errors == [("nnlab: error: exer_1.py defines no create_model(input_shape); the platform calls "
                       "load_train(path), create_model(input_shape), train_model(model, train_data, test_data, ...): "
                       "add it.")]
    assert course_runs(store) == []


def test_a_raising_train_model_is_named_with_its_line_and_its_run_failed(nnlab, tmp_path, store):
    text = (FIXTURES / "course_style_fashion.py").read_text().replace(
        "    features_train, target_train = train_data\n", "    raise ValueError('no GPU here')\n")
    script = write_script(tmp_path / "mine", "exer_1_broken.py", text)
    line = text.splitlines().index("    raise ValueError('no GPU here')") + 1
    code, _, errors = nnlab("course", "run", str(script), str(fashion_layout(tmp_path)), "--uri", store)
    assert code == 1
    assert errors == [(f"nnlab: error: train_model(model, train_data, test_data, ...) in exer_1_broken.py raised "
                       f"ValueError: no GPU here (line {line} of exer_1_broken.py); fix the script "
                       "(HYDRA_FULL_ERROR=1 shows the traceback).")]
    (run,) = course_runs(store)
    assert run.info.status == "FAILED" and "no GPU here" in run.data.tags["error"]


def test_a_script_of_no_named_exercise_asks_for_lab_and_a_wrong_layout_names_prepare(nnlab, tmp_path, store):
    script = write_script(tmp_path / "mine", "mine.py", (FIXTURES / "course_style_fashion.py").read_text())
    code, _, errors = nnlab("course", "run", str(script), str(tmp_path), "--uri", store)
    assert code == 2 and len(errors) == 1 and "name it with --lab (exer_1, exer_2" in errors[0]
    code, _, errors = nnlab("course", "run", str(script), str(tmp_path), "--lab", "exer_2", "--uri", store)
    assert code == 1 and len(errors) == 1
    assert f"{tmp_path} has no train_features.npy, train_target.npy" in errors[0]
    assert f"`nnlab course prepare fashion_mnist {tmp_path}`" in errors[0]
    assert course_runs(store) == []


def test_init_copies_the_packaged_script_and_keeps_an_existing_file(nnlab, tmp_path):
    code, out, _ = nnlab("course", "init", "exer_3", str(tmp_path / "work"))
    assert code == 0 and "nnlab: wrote" in out
    copied = tmp_path / "work"
    assert copied.read_text() == script_path("exer_3").read_text()
    (tmp_path / "dir").mkdir()
    assert nnlab("course", "init", "exer_5", str(tmp_path / "dir"))[0] == 0
    assert (tmp_path / "dir" / "exer_5.py").read_text() == script_path("exer_5").read_text()
    code, _, errors = nnlab("course", "init", "exer_1", str(copied))
    assert code == 2 and errors == [(f"nnlab: error: {copied} already exists; choose another DEST, or add --force "
                                     "to replace it.")]
    assert nnlab("course", "init", "exer_1", str(copied), "--force")[0] == 0
    assert copied.read_text() == script_path("exer_1").read_text()
    code, _, errors = nnlab("course", "init", "exer_9", str(tmp_path / "x.py"))
    assert code == 2 and errors[0].startswith("nnlab: error: Unknown exercise 'exer_9': valid exercise names are")


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_nnlabs_fruit_script_is_graded_under_another_backend_without_tensorflow(backend, tmp_path, store):
    import importlib.util
    import os
    import subprocess

    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed (make backends installs JAX and PyTorch)")
    data = fruits_layout(tmp_path, train=12, test=4)
    env = {**os.environ, "KERAS_BACKEND": backend, "NNLAB_CACHE_DIR": str(tmp_path / "cache"),
           "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run([sys.executable, str(Path(__file__).with_name("without_tensorflow.py")), "course", "run",
                             str(script_path("exer_3")), str(data), "--epochs", "1", "--uri", store],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == (0 if ": PASS: " in result.stdout else 1), result.stderr[-3000:]
    assert "nnlab course: exer_3 (fruits, CNN): " in result.stdout
    (run,) = course_runs(store)
    assert run.data.tags["backend"] == backend and run.data.params["test_size"] == "12"


def test_max_minutes_cuts_the_scripts_fit_after_an_epoch_and_says_so(nnlab, tmp_path, store):
    data = fruits_layout(tmp_path, train=12, test=4)
    code, out, errors = nnlab("course", "run", str(FIXTURES / "course_style_fruits.py"), str(data), "--lab", "exer_3",
                              "--max-minutes", "0.001", "--uri", store)
    assert code == (0 if ": PASS: " in out else 1), errors
    assert "(limit 60 min), 1 epoch, stopped by --max-minutes" in out  # the script asked for 8
    (run,) = course_runs(store)
    assert run.data.tags["stopped_by"] == "time_budget" and run.data.metrics["epochs_run"] == 1

"""The command line answers bad input with one sentence and a non-zero exit, before importing Keras."""

import pytest


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("trainer.epochs=abc", "Invalid value for trainer.epochs: Value 'abc' of type 'str' could not be converted"),
        ("model.widht=3", "Unknown key 'widht' in model: valid keys are activation,"),
        ("model=mpl", "Unknown model 'mpl': valid model names are alexnet, cnn, lstm, mlp, resnet, resnet50v2, retinanet, transfer, unet; did you mean 'mlp'?"),
        ("+experiment=fashion_cnn_adm", "did you mean 'fashion_cnn_adam'?"),
        ("sead=1", "Unknown key 'sead' in the root config: valid keys are augment, data_root"),
    ],
)
def test_config_errors_are_one_sentence(cli, tmp_path, override, expected):
    result = cli(override, cwd=tmp_path)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("nnlab: error: ")
    assert expected in lines[0]
    assert not (tmp_path / "mlflow.db").exists(), "a config error must not create a run"


def test_did_you_mean_for_a_close_key(cli, tmp_path):
    result = cli("model.widht=3", cwd=tmp_path)
    assert "did you mean 'width'?" in result.stderr


def test_list_prints_presets_and_registered_builders(cli, tmp_path):
    result = cli("list", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for word in ("fashion_cnn_adam", "fashion_mlp", "digits", "mnist", "cnn", "mlp", "rmsprop", "nadam", "adamw"):
        assert word in result.stdout


def test_version(cli, tmp_path):
    result = cli("--version", cwd=tmp_path)
    assert result.returncode == 0
    assert result.stdout.startswith("nnlab ")


@pytest.mark.parametrize(("args", "key"), [(["dataset=image_folder"], "dataset.path"),
                                           (["dataset=csv_table", "dataset.path=t.csv"], "dataset.target")])
def test_a_mandatory_key_left_unset_is_a_config_error_before_any_run(cli, tmp_path, args, key):
    result = cli(*args, cwd=tmp_path)
    assert result.returncode == 2
    (error,) = [line for line in result.stderr.splitlines() if line.startswith("nnlab: error:")]
    assert f"{key} must be set" in error
    assert not (tmp_path / "mlflow.db").exists()


@pytest.mark.parametrize(("error", "shown"), [(KeyboardInterrupt(), "Ctrl-C"),
                                              (KeyboardInterrupt("stopped by SIGTERM"), "stopped by SIGTERM")])
def test_an_interrupt_says_what_stopped_the_job(capsys, error, shown):
    from nnlab.cli import EXIT_INTERRUPTED, guarded

    def job():
        raise error

    with pytest.raises(SystemExit) as stop:
        guarded(job)
    assert stop.value.code == EXIT_INTERRUPTED
    assert capsys.readouterr().err == f"nnlab: interrupted ({shown}); a started run is marked KILLED.\n"


def test_a_failed_job_reraises_without_hydras_extra_stderr_line(capsys):
    from hydra.core.utils import JobReturn, JobStatus

    from nnlab.cli import quiet_failed_jobs

    quiet_failed_jobs()
    quiet_failed_jobs()  # idempotent: main() may run more than once in a process
    failed = JobReturn(overrides=["trainer.epochs=1"], status=JobStatus.FAILED)
    failed.return_value = ValueError("boom")
    failed.status = JobStatus.FAILED
    with pytest.raises(ValueError, match="boom"):
        failed.return_value
    assert capsys.readouterr().err == ""
    done = JobReturn(status=JobStatus.COMPLETED)
    done.return_value = 0.5
    assert done.return_value == 0.5


@pytest.mark.slow
def test_help_lists_the_groups_to_choose_but_not_the_internal_schemas(cli, tmp_path):
    result = cli("--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    groups = result.stdout.split("== Configuration groups ==")[1].split("== Config ==")[0]
    for group in ("dataset:", "model:", "optimizer:", "trainer:", "tracking:", "experiment:", "sweep:"):
        assert f"\n{group} " in groups
    assert "schema" not in groups
    assert "mlp, resnet" in groups and "fashion_cnn_adam" in groups


@pytest.mark.slow
def test_a_plugin_with_a_syntax_error_is_one_line_naming_file_and_line(cli, tmp_path):
    (tmp_path / "my_models.py").write_text("import os\n\ndef broken(:\n    pass\n")
    result = cli("plugins=[my_models.py]", f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}", cwd=tmp_path)
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert f"has a syntax error (invalid syntax) in {tmp_path / 'my_models.py'}, line 3" in lines[0]

"""The command line answers bad input with one sentence and a non-zero exit, before importing Keras."""

import pytest


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("trainer.epochs=abc", "Invalid value for trainer.epochs: Value 'abc' of type 'str' could not be converted"),
        ("model.widht=3", "Unknown key 'widht' in model: valid keys are activation,"),
        ("model=mpl", "Unknown model 'mpl': valid model names are alexnet, cnn, lstm, mlp, resnet, resnet50v2, transfer, unet; did you mean 'mlp'?"),
        ("+experiment=fashion_cnn", "did you mean 'fashion_cnn_adam'?"),
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

"""Bad config values are caught by the schemas (nnlab.config.checks) before any run exists and before Keras is
imported: one line on stderr naming the key, what is allowed and the closest valid name, exit status 2."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from nnlab import tasks
from nnlab.config import augment_checks, checks
from nnlab.errors import ConfigError

IMAGES = ["dataset=image_folder", "dataset.path=images"]
CSV = ["dataset=csv_table", "dataset.path=t.csv", "dataset.target=y"]

# (overrides, fragments the one error line must hold)
CASES = [
    # trainer
    (["trainer.batch_size=0"], ["trainer.batch_size=0", "must be >= 1"]),
    (["trainer.epochs=0"], ["trainer.epochs=0", "must be >= 1"]),
    (["trainer.epochs=-3"], ["trainer.epochs=-3"]),
    (["trainer.max_minutes=0"], ["trainer.max_minutes=0", "> 0 or null"]),
    (["trainer.threads=0"], ["trainer.threads=0", ">= 1 or null"]),
    (["trainer.early_stopping.patience=-1"], ["trainer.early_stopping.patience=-1", ">= 0 or null"]),
    (["trainer.loss=hubber"], ["Unknown trainer.loss 'hubber'", "ce_dice", "did you mean 'huber'?"]),
    (["trainer.metrics=[acuracy]"], ["trainer.metrics entry 'acuracy'", "did you mean 'accuracy'?"]),
    (["trainer.metrics=[mae,rsme]"], ["trainer.metrics entry 'rsme'", "did you mean 'rmse'?"]),
    (["trainer.stages=[{epochs:0}]"], ["trainer.stages.0.epochs=0", ">= 1"]),
    (["trainer.stages=[{epochs:2},{epochs:1,learning_rate:-0.1}]"], ["trainer.stages.1.learning_rate=-0.1"]),
    (["trainer.stages=[{epochs:2,trainable:some}]"], ["trainer.stages.0.trainable='some'", "all, none"]),
    (["trainer.verbose=5"], ["trainer.verbose=5", "in [0, 2]"]),
    # optimizer
    (["optimizer.learning_rate=-1"], ["optimizer.learning_rate=-1", "must be > 0"]),
    (["optimizer.learning_rate=0"], ["optimizer.learning_rate=0", "must be > 0"]),
    (["optimizer.schedule.name=cosin"], ["Unknown optimizer.schedule.name 'cosin'", "did you mean 'cosine'?"]),
    (["optimizer.schedule.factor=1.5"], ["optimizer.schedule.factor=1.5", "in (0, 1)"]),
    (["optimizer=sgd", "optimizer.momentum=1"], ["optimizer.momentum=1", "in [0, 1)"]),
    (["optimizer=sgd", "optimizer.momentum=-0.5"], ["optimizer.momentum=-0.5"]),
    (["optimizer.clipnorm=0"], ["optimizer.clipnorm=0", "> 0 or null"]),
    (["optimizer=rmsprop", "optimizer.rho=1"], ["optimizer.rho=1"]),
    (["optimizer.beta_1=1.2"], ["optimizer.beta_1=1.2"]),
    # models
    (["model.dropout=1.5"], ["model.dropout=1.5", "in [0, 1)"]),
    (["model.dropout=-0.1"], ["model.dropout=-0.1"]),
    (["model.activation=relux"], ["Unknown model.activation 'relux'", "gelu", "did you mean 'relu'?"]),
    (["model.width=0"], ["model.width=0", "must be > 0"]),
    (["model.widths=[64,0]"], ["model.widths.1=0", ">= 1"]),
    (["model.l2=-0.01"], ["model.l2=-0.01", ">= 0"]),
    (["model.l1=-1"], ["model.l1=-1"]),
    (["model.ensemble=0"], ["model.ensemble=0"]),
    (["model=cnn", "model.blocks.0.pool=median"], ["Unknown model.blocks.0.pool 'median'", "avg, max, none"]),
    (["model=cnn", "model.blocks.0.pool=mx"], ["model.blocks.0.pool 'mx'", "did you mean 'max'?"]),
    (["model=cnn", "model.blocks.1.dropout=1"], ["model.blocks.1.dropout=1"]),
    (["model=cnn", "model.blocks.0.filters=0"], ["model.blocks.0.filters=0"]),
    (["model=cnn", "model.dense=[128,-1]"], ["model.dense.1=-1"]),
    (["model=lstm", "model.cell=grux"], ["Unknown model.cell 'grux'", "did you mean 'gru'?"]),
    (["model=lstm", "model.recurrent_dropout=1.0"], ["model.recurrent_dropout=1.0"]),
    (["model=lstm", "model.units=[]"], ["model.units=[]", "at least 1 entry"]),
    (["model=transfer", "model.pooling=flaten"], ["Unknown model.pooling 'flaten'", "did you mean 'flatten'?"]),
    (["model=transfer", "model.dropout=1"], ["model.dropout=1"]),
    (["model=unet", "model.upsampling=bilinar"], ["Unknown model.upsampling 'bilinar'", "did you mean 'bilinear'?"]),
    (["model=unet", "model.depth=0"], ["model.depth=0"]),
    (["model=unet", "model.dropout=2"], ["model.dropout=2"]),
    (["model=alexnet", "model.width=-1"], ["model.width=-1"]),
    (["model=alexnet", "model.dropout=1"], ["model.dropout=1"]),
    (["model=resnet", "model.block=botleneck"], ["Unknown model.block 'botleneck'", "did you mean 'bottleneck'?"]),
    (["model=resnet", "model.dropout=1"], ["model.dropout=1"]),
    # datasets
    (["dataset.val_split=1.5"], ["dataset.val_split=1.5", "in [0, 1)", "0: no validation split"]),
    (["dataset.val_split=1"], ["dataset.val_split=1"]),
    (["dataset.limit=-10"], ["dataset.limit=-10", ">= 2 or null"]),
    (["dataset.limit=1"], ["dataset.limit=1", "at least 2"]),
    (["dataset.test_split=0"], ["dataset.test_split=0", "in (0, 1)"]),
    ([*IMAGES, "dataset.image_size=[0,64]"], ["dataset.image_size=[0, 64]", "[height, width]"]),
    ([*IMAGES, "dataset.image_size=[64]"], ["dataset.image_size=[64]"]),
    ([*IMAGES, "dataset.color_mode=greyscale"], ["Unknown dataset.color_mode 'greyscale'", "'grayscale'?"]),
    ([*IMAGES, "dataset.max_bad_fraction=2"], ["dataset.max_bad_fraction=2", "in [0, 1]"]),
    ([*CSV, "dataset.task=classifcation"], ["Unknown dataset.task 'classifcation'", "'classification'?"]),
    (["dataset=airline", "dataset.scale=minmx"], ["Unknown dataset.scale 'minmx'", "did you mean 'minmax'?"]),
    (["dataset=scenes", "dataset.source=fashion"], ["Unknown dataset.source 'fashion'", "'fashion_mnist'?"]),
    (["dataset=scenes", "dataset.target=box"], ["Unknown dataset.target 'box'", "did you mean 'boxes'?"]),
    (["dataset=boston", "dataset.folds=4", "dataset.fold=4"], ["dataset.fold=4", "dataset.folds=4"]),
    # augment
    (["augment.flip=horizonal"], ["Unknown augment.flip 'horizonal'", "did you mean 'horizontal'?"]),
    (["augment.fill_mode=mirror"], ["Unknown augment.fill_mode 'mirror'", "constant, nearest, reflect, wrap"]),
    (["augment.zoom=1.5"], ["augment.zoom=1.5", "in [0, 1]"]),
]


def case_id(case) -> str:
    return " ".join(case[0][-2:] if case[0][0] in (*IMAGES, *CSV) else case[0])


def no_run(*args, **kwargs):
    raise RuntimeError("the config passed validation and a run would start")


@pytest.fixture
def nnlab(nnlab_main, monkeypatch):
    """nnlab_main (conftest.py), with runs refused: a value let through fails at once, without training."""
    monkeypatch.setattr("nnlab.tracking.track.start_run", no_run)
    return nnlab_main


def error_line(result: tuple[int, list[str]], status: int) -> str:
    """The stderr line of a refused command (what `nnlab` returns), checked: exit `status`, nnlab's one line."""
    code, lines = result
    assert code == status and len(lines) == 1, lines
    assert lines[0].startswith("nnlab: error: "), lines
    return lines[0]


@pytest.mark.parametrize(("overrides", "fragments"), CASES, ids=[case_id(c) for c in CASES])
def test_a_bad_value_is_one_config_error_line_naming_the_key_before_any_run(nnlab, tmp_path, overrides, fragments):
    line = error_line(nnlab(*overrides), status=2)
    for fragment in fragments:
        assert fragment in line
    assert not (tmp_path / "mlflow.db").exists(), "a config error must not create a run (nor the store)"


def composed(*overrides: str):
    with initialize_config_module(config_module="nnlab.conf", version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


@pytest.mark.parametrize("overrides", [
    ["dataset.val_split=0"], ["dataset.limit=2"], ["dataset.limit=null"], ["trainer.max_minutes=null"],
    ["trainer.max_minutes=0.5"], ["trainer.early_stopping.patience=0"], ["model.dropout=0"], ["model.dropout=0.99"],
    ["trainer.loss=huber"], ["trainer.loss=mse"], ["trainer.loss=logcosh"], ["trainer.loss=ce_dice"],
    ["trainer.metrics=[rmse,mae,auc]"], ["optimizer.schedule.name=cosine"], ["optimizer=sgd", "optimizer.momentum=0"],
    ["model.depth=0"], ["model.widths=[]"], ["model.activation=gelu"], ["augment.flip=horizontal_and_vertical"],
    ["trainer.stages=[{epochs:1,trainable:none},{epochs:2,trainable:4,learning_rate:0.0001}]"],
    ["model=transfer", "model.trainable=[block_16, Conv_1]"], ["dataset=boston", "dataset.folds=4", "dataset.fold=3"],
], ids=lambda o: " ".join(o))
def test_edge_values_that_are_allowed_pass(overrides):
    OmegaConf.to_object(composed(*overrides))


def preset_names(group: str) -> list[str]:
    import nnlab.conf

    return sorted(p.stem for p in (Path(nnlab.conf.__file__).parent / group).glob("*.yaml"))


PRESETS = [f"{prefix}{group}={name}" for prefix, group in (("+", "experiment"), ("+", "sweep"), ("", "model"),
                                                             ("", "dataset"), ("", "optimizer"))
           for name in preset_names(group)]


@pytest.mark.parametrize("override", PRESETS)
def test_every_preset_passes_validation(override, monkeypatch):
    monkeypatch.setenv("NNLAB_DATA_DIR", "/data/root")
    cfg = composed(override)
    unset = [f"{key}=x" for key in OmegaConf.missing_keys(cfg)]  # e.g. image_folder's path, set by the user
    OmegaConf.to_object(composed(override, *unset) if unset else cfg)


def test_typed_configs_built_in_python_are_checked_too():
    from nnlab.config.data import AugmentConfig
    from nnlab.config.optim import AdamConfig
    from nnlab.config.train import StageConfig, TrainerConfig

    TrainerConfig(epochs=3, batch_size=16, verbose=0, stages=[StageConfig(epochs=2), {"epochs": 1}])
    AdamConfig(learning_rate=0.05)
    AugmentConfig(flip="horizontal")
    with pytest.raises(ConfigError, match=r"^trainer.stages.1.epochs=0 is out of range"):
        TrainerConfig(stages=[StageConfig(epochs=2), StageConfig(epochs=0)])
    with pytest.raises(ConfigError, match=r"^optimizer.learning_rate=0 is out of range: it must be > 0;"):
        AdamConfig(learning_rate=0)


def test_every_listed_activation_is_a_keras_activation():
    import keras

    for name in checks.ACTIVATIONS:
        assert callable(keras.activations.get(name)), name


def tasks_accepting(method: str, *args) -> list[str]:
    """The tasks whose `method(*args)` (e.g. metric("rmse", 3)) builds, rather than refusing the name."""
    from nnlab.errors import NnlabError
    from nnlab.tasks import TASKS

    accepted = []
    for task in (TASKS.get(name)() for name in TASKS.names()):
        try:
            getattr(task, method)(*args)
        except (NnlabError, KeyError, ValueError):
            continue
        accepted.append(task.name)
    return accepted


def test_every_listed_metric_is_accepted_at_runtime_by_some_task():
    for metric in tasks.metric_names():
        assert tasks_accepting("metric", metric, 3), f"trainer.metrics accepts '{metric}', but no task does at runtime"


def test_every_listed_loss_is_accepted_at_runtime_by_some_task():
    for loss in tasks.loss_names():
        assert tasks_accepting("loss", loss, None, 3), f"trainer.loss accepts '{loss}', but no task does at runtime"


def test_the_name_lists_match_the_builders_at_runtime():
    import keras

    from nnlab.data import augment, images
    from nnlab.models import conv, resnet, sequence, transfer, unet
    from nnlab.training import optim

    assert set(checks.SCHEDULES) == set(optim.SCHEDULES)
    assert set(checks.CONV_POOLS) == {*conv.POOLS, "none"}
    assert set(checks.POOLINGS) == set(transfer.POOLINGS)
    assert set(checks.CELLS) == set(sequence.CELLS)
    assert set(checks.BLOCKS) == set(resnet.BLOCKS)
    assert set(checks.UPSAMPLINGS) == set(unet.UPSAMPLINGS)
    assert set(checks.PREPROCESS) == {"auto", "none", *transfer.FAMILIES}
    assert set(augment_checks.FLIPS) == set(augment.FLIPS)
    assert set(checks.COLOR_MODES) == set(images.COLOR_MODES)
    assert set(augment_checks.FILL_MODES) == set(keras.layers.RandomTranslation._SUPPORTED_FILL_MODE)


def python_main(args: list[str], store) -> str:
    """A script running nnlab's main in a fresh interpreter; prints the exit status and which Keras backends got
    imported (MLflow is: the sweep callback Hydra instantiates for every job imports nnlab.tracking.track)."""
    argv = ["nnlab", *args, f"tracking.uri=sqlite:///{store}"]
    return (f"import sys; sys.argv = {argv!r}\nfrom nnlab.cli import main\n"
            "try:\n    main()\nexcept SystemExit as stop:\n    print('EXIT', stop.code)\n"
            "print('IMPORTED', sorted(m for m in ('tensorflow', 'keras', 'jax', 'torch') if m in sys.modules))\n")


@pytest.mark.slow
@pytest.mark.parametrize(("args", "fragment"), [
    (["trainer.batch_size=0"], "trainer.batch_size=0 is out of range"),
    (["trainer.loss=hubber"], "did you mean 'huber'?"),
    (["model=cnn", "model.blocks.0.pool=median"], "model.blocks.0.pool 'median'"),
    (["optimizer.schedule.name=cosin"], "did you mean 'cosine'?"),
])
def test_a_config_error_is_one_line_exit_2_imports_no_keras_backend_and_creates_no_store(tmp_path, args, fragment):
    store = tmp_path / "store" / "mlflow.db"
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    out = subprocess.run([sys.executable, "-c", python_main(args, store)], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=60, check=False)
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert "EXIT 2" in out.stdout, out.stdout + out.stderr
    assert len(lines) == 1 and lines[0].startswith("nnlab: error: ") and fragment in lines[0], out.stderr
    assert "Traceback" not in out.stderr
    assert "IMPORTED []" in out.stdout, out.stdout
    assert not store.exists(), "a config error must not create a run (nor the store)"


def test_a_failing_job_prints_one_line_without_hydras_overrides_line(nnlab, tmp_path):
    """A job error (here: a plugin that does not parse, imported inside the job) is nnlab's sentence alone, not
    preceded by Hydra's "Error executing job with overrides: [...]"."""
    (tmp_path / "my_models.py").write_text("import os\n\ndef broken(:\n    pass\n")
    line = error_line(nnlab("plugins=[my_models.py]"), status=1)
    assert line.startswith("nnlab: error: Plugin 'my_models.py' has a syntax error")
    assert f"{tmp_path / 'my_models.py'}, line 3: def broken(:" in line


def test_a_plugin_raising_on_import_is_named_with_its_line(nnlab, tmp_path):
    (tmp_path / "my_models.py").write_text("X = 1\nraise ValueError('no such layer')\n")
    line = error_line(nnlab("plugins=[my_models.py]"), status=1)
    assert "ValueError: no such layer" in line and f"{tmp_path / 'my_models.py'}, line 2" in line
    assert "nnlab_plugin_my_models" not in sys.modules, "a failed plugin leaves no half-imported module behind"

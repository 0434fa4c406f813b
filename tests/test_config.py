"""Typed configs: composition, validation before any Keras import, schema <-> builder agreement."""

import dataclasses
import inspect
import subprocess
import sys

import pytest
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from nnlab.config import SCHEMAS, user_data_dir

EXPERIMENTS = ["fashion_mlp", "fashion_cnn_adam"]


def composed(*overrides: str):
    with initialize_config_module(config_module="nnlab.conf", version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def test_default_config_is_the_offline_digits_mlp():
    cfg = composed()
    assert cfg.dataset.name == "digits"
    assert cfg.model.name == "mlp"
    assert cfg.optimizer.name == "adam"
    assert cfg.tracking.uri == "sqlite:///mlflow.db"
    assert OmegaConf.is_missing(cfg, "seed") is False


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiments_compose_and_resolve(name, monkeypatch):
    monkeypatch.setenv("NNLAB_DATA_DIR", "/data/root")
    cfg = composed(f"+experiment={name}")
    assert cfg.dataset.name == "fashion_mnist"
    assert cfg.dataset.path == "/data/root/fashion-mnist"
    assert cfg.trainer.max_minutes == 20


def test_data_root_falls_back_to_a_user_folder(monkeypatch):
    monkeypatch.delenv("NNLAB_DATA_DIR", raising=False)
    cfg = composed("dataset=mnist")
    assert cfg.dataset.path == f"{user_data_dir()}/mnist"


def test_wrong_type_is_rejected_while_composing():
    with pytest.raises(Exception) as err:
        composed("trainer.epochs=abc")
    assert "could not be converted to Integer" in str(err.value.__cause__)


def test_unknown_key_is_rejected_while_composing():
    with pytest.raises(Exception, match="widht"):
        composed("model.widht=3")


@pytest.mark.parametrize("group", ["model", "dataset"])
def test_every_registered_builder_takes_exactly_its_schema_keys(group):
    """YAML keys are the builder's keyword arguments: a renamed argument must fail here."""
    if group == "model":
        from nnlab.models import MODELS as registry
        runtime = {"x"}
    else:
        from nnlab.data import DATASETS as registry
        runtime = {"seed"}
    for name, schema in SCHEMAS[group].items():
        # A whole model (a detector) gets the data's input shape and class count instead of a tensor x.
        given = {"input_shape", "num_classes"} if registry.info(name).get("complete") else runtime
        params = set(inspect.signature(registry.get(name)).parameters) - given
        # Every model also takes param_budget, max_params and ensemble, which build_model handles around the builder.
        fields = {f.name for f in dataclasses.fields(schema)} - {"name", "param_budget", "max_params", "ensemble"}
        assert params == fields, f"{group} '{name}': builder {sorted(params)} != schema {sorted(fields)}"


def test_optimizer_schema_keys_are_keras_arguments():
    from nnlab.training.optim import OPTIMIZERS

    for name, schema in SCHEMAS["optimizer"].items():
        params = set(inspect.signature(OPTIMIZERS.get(name)).parameters)
        fields = {f.name for f in dataclasses.fields(schema)} - {"name", "schedule"}
        assert fields <= params, f"optimizer '{name}': {sorted(fields - params)} are not Keras arguments"


def test_cfg_job_never_imports_tensorflow_or_keras():
    code = (
        "import sys; sys.argv = ['nnlab', '+experiment=fashion_cnn_adam', '--cfg', 'job'];"
        "from nnlab.cli import main; main();"
        "print('IMPORTED', sorted(m for m in ('tensorflow', 'keras', 'mlflow') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "name: cnn" in out.stdout
    assert "IMPORTED []" in out.stdout


def experiment_names():
    from pathlib import Path

    import nnlab.conf

    return sorted(p.stem for p in (Path(nnlab.conf.__file__).parent / "experiment").glob("*.yaml"))


def input_shape(dataset) -> tuple[int, ...]:
    fixed = {"fashion_mnist": (28, 28, 1), "mnist": (28, 28, 1), "notmnist": (28, 28, 1), "cifar10": (32, 32, 3),
             "boston": (13,), "digits": (8, 8, 1)}
    if dataset.name in fixed:
        return fixed[dataset.name]
    if dataset.name == "airline":
        return (dataset.window, 1)
    if dataset.name == "scenes":
        return (*dataset.canvas_size, 3)
    return (*dataset.image_size, 3)


# The task each preset's dataset serves, and its class count (what the loader would report).
TASK = {"boston": ("regression", 0), "airline": ("regression", 0), "faces": ("regression", 0),
        "scenes": ("segmentation", 11), "oxford_pets": ("segmentation", 3)}


@pytest.mark.parametrize("name", experiment_names())
def test_every_experiment_composes_and_its_model_builds(name, monkeypatch):
    """Each preset resolves, and its model builds on its dataset's input within its own max_params."""
    from nnlab.models import build_model

    monkeypatch.setenv("NNLAB_DATA_DIR", "/data/root")
    cfg = composed(f"+experiment={name}")
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    if model_cfg.get("weights") not in (None, "none"):
        model_cfg["weights"] = None  # ImageNet or a file made by another run: not needed to check the shape
    task, classes = TASK.get(cfg.dataset.name, ("classification", 10))
    if cfg.dataset.get("target") == "boxes":
        task = "detection"
    model = build_model(model_cfg, input_shape(cfg.dataset), task, classes)
    assert model.count_params() > 0
    assert cfg.tracking.experiment != "nnlab", "presets file their runs under their lab's experiment"


def test_the_offline_hotdog_preset_loads_what_its_pretraining_exports(monkeypatch):
    monkeypatch.setenv("NNLAB_DATA_DIR", "/data/root")
    pre, off = composed("+experiment=hotdog_pretrain"), composed("+experiment=hotdog_offline")
    assert off.model.weights == f"{pre.trainer.export_dir}/model.keras"
    same = ("backbone", "backbone_kwargs", "resize")
    assert [off.model[k] for k in same] == [pre.model[k] for k in same]
    assert off.dataset.image_size == pre.dataset.image_size  # fed as the backbone learnt
    assert pre.dataset.more_train_dirs == ["test"] and pre.dataset.test_dir is None


def sweep_names():
    from pathlib import Path

    import nnlab.conf

    return sorted(p.stem for p in (Path(nnlab.conf.__file__).parent / "sweep").glob("*.yaml"))


@pytest.mark.parametrize("name", sweep_names())
def test_every_sweep_preset_composes_for_each_swept_value(name):
    from hydra.core.override_parser.overrides_parser import OverridesParser

    with initialize_config_module(config_module="nnlab.conf", version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"+sweep={name}"], return_hydra_config=True)
    assert cfg.sweep_name == name and cfg.tracking.experiment == name
    params = cfg.hydra.sweeper.params
    assert params, "a sweep preset sweeps something"
    if cfg.hydra.sweeper._target_.endswith("BasicSweeper"):  # Optuna's ranges are sampled, not enumerated
        parser = OverridesParser.create()
        for key, values in params.items():
            for value in parser.parse_override(f"{key}={values}").sweep_string_iterator():
                assert OmegaConf.select(composed(f"+sweep={name}", f"{key}={value}"), "model.name")


def test_depth_sweep_keeps_every_depth_within_5_percent_of_its_budget():
    from nnlab.models import build_model, solve_param_budget

    cfg = composed("+sweep=fashion_depth")
    counts = []
    for depth in (2, 3, 5, 10):
        model_cfg = OmegaConf.to_container(cfg.model, resolve=True) | {"depth": depth}
        solved = solve_param_budget(model_cfg, (28, 28, 1), "classification", 10)
        counts.append(build_model(solved, (28, 28, 1), "classification", 10).count_params())
    assert all(abs(c - 300_000) <= 15_000 for c in counts), counts

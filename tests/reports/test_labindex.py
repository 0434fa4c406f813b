"""The lab index (nnlab/labs.yaml, nnlab/reports/labindex.py): `nnlab labs`, docs/labs.md, and that every lab points at
presets that exist and log where `nnlab report --lab` looks for their runs."""

import re
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module

from nnlab.course.labs import EXERCISES
from nnlab.reports import labindex

REPO = Path(__file__).resolve().parents[2]
CONF = REPO / "src" / "nnlab" / "conf"


@pytest.fixture
def nnlab(nnlab_cli):
    return nnlab_cli


def test_nnlab_labs_lists_every_lab_with_its_command_and_result(nnlab):
    code, out, _ = nnlab("labs")
    assert code == 0
    labs = labindex.labs()
    assert len(labs) >= 25
    for lab in labs.values():
        assert re.search(rf"^{lab.name}\s+{re.escape(lab.title)}", out, re.MULTILINE), lab.name
        assert f"$ {lab.commands[0]}" in out
        assert lab.result in out
    # every assignment of the course material has its entry
    expected = {"fashion_mlp", "fashion_neurons", "fashion_depth", "fashion_optimizers", "fashion_cnn_adam",
                "fashion_alexnet_shape", "fashion_confusion", "fashion_dropout", "boston_variants", "airline_lstm",
                "fruits_cnn", "fruits_resnet", "faces_age", "pets_unet", "scenes_unet", "unet_loss",
                "scenes_detector", "cifar10_cnn", "cifar10_mobilenet", "notmnist_cnn", "dropout_regression", "hotdog",
                *EXERCISES}
    assert expected <= set(labs)


def test_nnlab_labs_name_shows_one_lab_in_detail(nnlab):
    code, out, _ = nnlab("labs", "faces_age")
    assert code == 0
    assert "test_mae <= 8 (the course's bar)" in out
    assert "python -m nnlab +experiment=faces_age" in out and "6.74" in out and "2026-11-24" in out
    assert "nnlab report --lab faces_age" in out


def test_an_unknown_lab_is_one_sentence_with_the_closest_name(nnlab):
    code, out, err = nnlab("labs", "fashion_mpl")
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and out == "" and len(lines) == 1
    assert lines[0].startswith("nnlab: error: Unknown lab 'fashion_mpl': valid lab names are airline_lstm,")
    assert "did you mean 'fashion_mlp'?" in lines[0]


def test_docs_labs_md_is_generated_from_the_yaml_and_in_sync(nnlab):
    code, out, _ = nnlab("labs", "--markdown")
    assert code == 0 and out == labindex.markdown()
    docs = REPO / "docs" / "labs.md"
    assert docs.read_text() == out, "docs/labs.md is stale: run `nnlab labs --markdown > docs/labs.md`"
    for lab in labindex.labs().values():
        assert f"| `{lab.name}` " in out


def test_labs_yaml_ships_as_package_data():
    assert '"labs.yaml"' in (REPO / "pyproject.toml").read_text()


def preset_group(name: str) -> str:
    groups = [g for g in ("experiment", "sweep") if (CONF / g / f"{name}.yaml").exists()]
    assert len(groups) == 1, f"no experiment or sweep preset '{name}'"
    return groups[0]


@pytest.mark.parametrize("name", list(labindex.labs()))
def test_each_labs_presets_log_to_its_experiment_with_its_tags(name):
    """What the report searches (experiment, tags dataset/model, sweep_name) is what the presets log."""
    lab = labindex.labs()[name]
    named = set(re.findall(r"\+experiment=(\w+)", " ".join(lab.commands)))
    named |= set(re.findall(r"nnlab sweep (\w+)", " ".join(lab.commands)))
    for preset in named:
        preset_group(preset)  # every command names presets that exist
    assert set(lab.presets) <= named, "the lab's presets are the ones its commands run"
    for preset in lab.presets:
        group = preset_group(preset)
        with initialize_config_module(config_module="nnlab.conf", version_base="1.3"):
            cfg = compose(config_name="config", overrides=[f"+{group}={preset}"])
        assert cfg.tracking.experiment == lab.experiment, preset
        for key in ("dataset", "model"):
            if key in lab.tags:
                assert cfg[key].name == lab.tags[key], (preset, key)
        if lab.sweep:
            assert group == "sweep" and cfg.sweep_name == lab.sweep
    if not lab.presets:  # the course trainer's exercises: graded runs in experiment 'course'
        assert lab.experiment == "course" and lab.tags == {"course.lab": name}


@pytest.mark.parametrize("name", list(EXERCISES))
def test_course_exercise_bars_are_the_graders_bars(name):
    exercise, bar = EXERCISES[name], labindex.labs()[name].bar
    assert bar.metric == f"test_{exercise.metric}" and bar.value == pytest.approx(exercise.bar)
    assert bar.op == (">=" if exercise.higher_is_better else "<=") and bar.minutes == exercise.minutes
    assert bar.time_metric == "script_seconds" and bar.by == "course"


def test_a_measured_result_says_on_which_data_and_an_unmeasured_one_says_so():
    for lab in labindex.labs().values():
        if lab.result.startswith(labindex.NOT_MEASURED):
            assert lab.date is None, lab.name
        else:
            assert lab.data, lab.name
            assert lab.date is None or re.fullmatch(r"\d{4}-\d\d-\d\d", lab.date), lab.name
        assert lab.figure_runs in ("best", "all") and lab.columns and lab.figures, lab.name


def test_each_committed_lab_report_exists_with_every_figure_it_shows():
    docs = REPO / "docs"
    reported = [lab for lab in labindex.labs().values() if lab.report]
    assert reported
    for lab in reported:
        page = docs / lab.report
        assert page.is_file(), f"{lab.name}: {page} is missing"
        for image in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", page.read_text()):
            assert (page.parent / image).is_file(), f"{lab.name}: {image} is missing"
        assert lab.measured_with and lab.date, f"{lab.name}: a measured lab states its command and date"

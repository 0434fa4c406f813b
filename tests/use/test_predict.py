"""`nnlab predict`: a finished run's model on new files, preprocessed as in training, one test per input kind and
task, each checked against the Keras model's own predictions on the same decoded inputs."""

import json
from pathlib import Path
from types import SimpleNamespace

import keras
import numpy as np
import pandas as pd
import pytest
from data_fixtures import make_airline, make_boston, make_split_tree
from PIL import Image
from trained_runs import EXPERIMENT, copy_run, marker_plugin, run_data, run_listing_plugin, run_model, train_run

from nnlab.data.images import decode_one
from nnlab.data.tables import BOSTON_COLUMNS
from nnlab.errors import NnlabError
from nnlab.use import inputs as inputs_module
from nnlab.use import predict as predict_module
from nnlab.use.predict import predict
from nnlab.use.trained import Source


@pytest.fixture(scope="module")
def pets(runs_root) -> Path:
    return make_split_tree(runs_root / "pets", ["cat", "dog"], train=12, test=4)


@pytest.fixture(scope="module")
def folder_run(runs_store, pets) -> str:
    return train_run(runs_store, "dataset=image_folder", f"dataset.path={pets}", "dataset.image_size=[12,12]",
                     "dataset.cache_dir=null", "model=cnn", "model.blocks=[{filters:4}]", "model.dense=[8]",
                     "trainer.epochs=2", "trainer.batch_size=8")


@pytest.fixture(scope="module")
def boston_file(runs_root) -> Path:
    return make_boston(runs_root / "boston" / "housing.data", rows=120)


@pytest.fixture(scope="module")
def boston_run(runs_store, boston_file) -> str:
    # an ensemble of two: its saved model needs nnlab's MemberAverage layer to load
    return train_run(runs_store, "dataset=boston", f"dataset.path={boston_file.parent}", "dataset.log_features=[CRIM]",
                     "model.widths=[8]", "model.ensemble=2", "trainer.epochs=2")


def model_probabilities(model, x) -> np.ndarray:
    """The model's own class probabilities (two columns for one sigmoid unit)."""
    p = np.asarray(model.predict(x, verbose=0), np.float64)
    return np.concatenate([1 - p, p], axis=1) if p.shape[1] == 1 else p


def chosen(frame: pd.DataFrame, probabilities: np.ndarray) -> None:
    """predictions.csv's class and probability are the model's argmax and its probability."""
    assert frame["class_index"].tolist() == probabilities.argmax(1).tolist()
    assert np.allclose(frame["probability"], probabilities.max(1), atol=1e-5)


# --- images ---------------------------------------------------------------------------------------------------------

def test_image_folder_predictions_equal_the_models_own_on_the_training_decoder(folder_run, runs_client, pets,
                                                                              runs_root):
    frame = predict(folder_run, [pets / "test"], out=runs_root / "out-folder", uri=runs_client.tracking_uri)
    files = sorted((pets / "test").rglob("*.png"))
    assert frame["input"].tolist() == [str(f) for f in files]
    x = np.stack([decode_one(f, (12, 12), "RGB", False) for f in files])  # what training decoded
    chosen(frame, model_probabilities(run_model(runs_client, folder_run), x))
    assert set(frame["class"]) <= {"cat", "dog"} and "top3" not in frame  # two classes: no top-3
    written = pd.read_csv(runs_root / "out-folder" / "predictions.csv")
    assert written["class"].tolist() == frame["class"].tolist()
    assert (runs_root / "out-folder" / "predictions.png").stat().st_size > 0


def test_single_image_files_and_a_nested_folder_skip_non_images_and_keep_sorted_order(folder_run, runs_client, pets,
                                                                                      runs_root):
    nested = runs_root / "nested"
    (nested / "b" / "deeper").mkdir(parents=True)
    source = sorted((pets / "test" / "dog").glob("*.png"))
    Image.open(source[0]).save(nested / "b" / "deeper" / "z.png")
    Image.open(source[1]).save(nested / "b" / "a.png")
    (nested / "b" / "notes.txt").write_text("not an image")
    (nested / ".hidden.png").write_bytes(b"junk")
    single = pets / "test" / "cat" / "0000.png"
    frame = predict(folder_run, [single, nested], out=runs_root / "out-mixed", uri=runs_client.tracking_uri)
    assert frame["input"].tolist() == [str(single), str(nested / "b" / "a.png"), str(nested / "b" / "deeper" / "z.png")]
    x = np.stack([decode_one(Path(f), (12, 12), "RGB", False) for f in frame["input"]])
    chosen(frame, model_probabilities(run_model(runs_client, folder_run), x))


def test_a_big_exif_rotated_phone_jpeg_is_turned_upright_before_resizing(folder_run, runs_client, runs_root):
    upright = np.zeros((4000, 3000, 3), np.uint8)  # a portrait photo: red top half, blue bottom half
    upright[:2000, :, 0] = 255
    upright[2000:, :, 2] = 255
    stored = Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90)  # lying on its side, 4000 x 3000
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    path = runs_root / "phone.jpg"
    stored.save(path, quality=90, exif=exif)
    assert Image.open(path).size == (4000, 3000)
    spec = inputs_module.ImageSpec((12, 12), "RGB", False, None)
    pixels = inputs_module.decode_upright(path, spec)
    assert pixels[0, :, 0].min() > 200 and pixels[0, :, 2].max() < 60  # top row red
    assert pixels[-1, :, 2].min() > 200 and pixels[-1, :, 0].max() < 60  # bottom row blue
    frame = predict(folder_run, [path], out=runs_root / "out-phone", uri=runs_client.tracking_uri)
    chosen(frame, model_probabilities(run_model(runs_client, folder_run), pixels[None]))


def test_the_image_spec_follows_the_models_input_and_the_runs_crop_setting(tmp_path):
    inputs = keras.Input((10, 20, 1))
    rescaled = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(
        keras.layers.Rescaling(1 / 255, name="rescale")(inputs))))
    plain = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(inputs)))
    config = SimpleNamespace(dataset=SimpleNamespace(crop_to_aspect_ratio=True))
    source = Source(None, None, "", config, {}, rescaled)
    spec = inputs_module.image_spec(source)
    assert spec == inputs_module.ImageSpec((10, 20), "L", True, None)  # raw pixels: the model rescales them
    assert inputs_module.image_spec(Source(None, None, "", config, {}, plain)).scale == 1 / 255
    wide = tmp_path / "wide.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (30, 90, 3), dtype=np.uint8)).save(wide)
    assert np.array_equal(inputs_module.decode_upright(wide, spec), decode_one(wide, (10, 20), "L", True))


def test_submission_csv_of_a_two_class_image_run_has_file_stems_and_predicted_class_indices(folder_run, runs_client,
                                                                                           pets, runs_root):
    kaggle = runs_root / "kaggle-test"
    kaggle.mkdir()
    for i, f in zip((10, 2, 1), sorted((pets / "test").rglob("*.png"))[2:5]):
        Image.open(f).save(kaggle / f"{i}.png")
    frame = predict(folder_run, [kaggle], out=runs_root / "out-kaggle", uri=runs_client.tracking_uri, submission=True)
    submission = pd.read_csv(runs_root / "out-kaggle" / "submission.csv")
    assert list(submission.columns) == ["id", "label"] and submission["id"].tolist() == [1, 2, 10]
    by_stem = {Path(i).stem: k for i, k in zip(frame["input"], frame["class_index"])}
    assert submission["label"].tolist() == [by_stem["1"], by_stem["2"], by_stem["10"]]


def test_submission_is_refused_for_a_ten_class_run(digits_run, runs_client, runs_root):
    np.save(runs_root / "one.npy", np.zeros((8, 8, 1), np.float32))
    with pytest.raises(NnlabError, match="--submission needs a two-class image classifier.* 10 classes"):
        predict(digits_run, [runs_root / "one.npy"], out=runs_root / "out-sub10", uri=runs_client.tracking_uri,
                submission=True)


def test_an_input_file_that_is_not_an_image_is_refused_in_one_sentence(folder_run, runs_client, runs_root):
    bad = runs_root / "photo.jpg"
    bad.write_text("this is not a JPEG")
    with pytest.raises(NnlabError, match=r"photo.jpg is not an image nnlab can read") as err:
        predict(folder_run, [bad], out=runs_root / "out-bad", uri=runs_client.tracking_uri)
    assert "\n" not in str(err.value)


def test_a_table_given_to_an_image_model_is_refused(folder_run, runs_client, boston_file, runs_root):
    table = runs_root / "rows.csv"
    table.write_text("a,b\n1,2\n")
    with pytest.raises(NnlabError, match="takes images, not tables"):
        predict(folder_run, [table], out=runs_root / "out-table", uri=runs_client.tracking_uri)


# --- digits: arrays and pixels in [0, 1] ------------------------------------------------------------------------------

def test_npy_of_the_test_split_reproduces_the_runs_own_test_accuracy_and_top3(digits_run, runs_client, runs_root):
    data = run_data(runs_client, digits_run)
    np.save(runs_root / "digits-test.npy", data.test[0])
    frame = predict(digits_run, [runs_root / "digits-test.npy"], out=runs_root / "out-npy",
                    uri=runs_client.tracking_uri)
    assert frame["row"].tolist() == list(range(len(data.test[0])))
    accuracy = float(np.mean(frame["class_index"].to_numpy() == data.test[1]))
    assert accuracy == pytest.approx(runs_client.get_run(digits_run).data.metrics["test_accuracy"], abs=1e-6)
    probabilities = model_probabilities(run_model(runs_client, digits_run), data.test[0])
    chosen(frame, probabilities)
    top = np.argsort(-probabilities[0])[:3]
    assert frame["top3"][0].split("; ")[0].startswith(f"{top[0]} (") and frame["top3"][0].count("(") == 3
    assert (runs_root / "out-npy" / "predictions.png").stat().st_size > 0  # 8x8 digits are images: drawn


def test_a_digits_model_gets_image_files_as_grayscale_pixels_in_unit_range(digits_run, runs_client, runs_root):
    folder = runs_root / "digit-pngs"
    folder.mkdir()
    data = run_data(runs_client, digits_run)
    for i in range(3):
        Image.fromarray((data.test[0][i, ..., 0] * 255).round().astype(np.uint8), "L").convert("RGB").save(
            folder / f"{i}.png")
    frame = predict(digits_run, [folder], out=runs_root / "out-digit-png", uri=runs_client.tracking_uri)
    x = np.stack([decode_one(folder / f"{i}.png", (8, 8), "L", False) for i in range(3)]).astype(np.float32) / 255
    chosen(frame, model_probabilities(run_model(runs_client, digits_run), x))
    assert np.allclose(x, data.test[0][:3], atol=1 / 255)  # the same digits the model was tested on


def test_an_npy_of_the_wrong_shape_is_refused_naming_the_models_input_shape(digits_run, runs_client, runs_root):
    np.save(runs_root / "wrong.npy", np.zeros((3, 5), np.float32))
    with pytest.raises(NnlabError, match=r"shape \(3, 5\).* takes \(8, 8, 1\)"):
        predict(digits_run, [runs_root / "wrong.npy"], out=runs_root / "out-wrong", uri=runs_client.tracking_uri)


# --- tables ---------------------------------------------------------------------------------------------------------

def test_csv_rows_through_the_recorded_standardization_equal_the_training_arrays(boston_run, runs_client, boston_file,
                                                                               runs_root):
    raw = np.loadtxt(boston_file)
    order = np.random.RandomState(113).permutation(len(raw))
    test_rows = raw[order[int(len(raw) * 0.8):]]  # the loader's test split
    table = runs_root / "houses.csv"
    pd.DataFrame(test_rows, columns=BOSTON_COLUMNS + ["MEDV"]).to_csv(table, index=False)
    frame = predict(boston_run, [table], out=runs_root / "out-boston", uri=runs_client.tracking_uri)
    data = run_data(runs_client, boston_run)
    expected = run_model(runs_client, boston_run).predict(data.test[0], verbose=0).reshape(-1)
    assert np.allclose(frame["value"], expected, atol=1e-5)
    mae = float(np.mean(np.abs(frame["value"] - test_rows[:, 13])))
    assert mae == pytest.approx(runs_client.get_run(boston_run).data.metrics["test_mae"], rel=1e-4)
    assert not (runs_root / "out-boston" / "predictions.png").exists()  # no images to draw


def test_a_headerless_housing_data_file_is_read_in_the_training_column_order(boston_run, runs_client, boston_file,
                                                                            runs_root):
    frame = predict(boston_run, [boston_file], out=runs_root / "out-housing", uri=runs_client.tracking_uri)
    assert frame["row"].tolist() == list(range(120))
    order = np.random.RandomState(113).permutation(120)
    data = run_data(runs_client, boston_run)
    expected = run_model(runs_client, boston_run).predict(data.test[0], verbose=0).reshape(-1)
    assert np.allclose(frame["value"].to_numpy()[order[96:]], expected, atol=1e-5)


def test_a_table_missing_a_feature_column_is_refused_naming_it(boston_run, runs_client, runs_root):
    table = runs_root / "partial.csv"
    pd.DataFrame(np.ones((2, 12)), columns=BOSTON_COLUMNS[:12]).to_csv(table, index=False)
    with pytest.raises(NnlabError, match=r"lacks the feature columns \['LSTAT'\]"):
        predict(boston_run, [table], out=runs_root / "out-partial", uri=runs_client.tracking_uri)


def test_a_table_run_without_preprocessing_json_fails_in_one_sentence(boston_run, runs_client, boston_file, runs_root):
    old = copy_run(runs_client, boston_run, EXPERIMENT, ["config.yaml", "model/model.keras"], {"task": "regression"})
    with pytest.raises(NnlabError, match="has no preprocessing.json .* cannot be prepared as in training"):
        predict(old, [boston_file], out=runs_root / "out-old", uri=runs_client.tracking_uri)


@pytest.fixture(scope="module")
def shop(runs_root) -> Path:
    """A CSV with a text column (one-hot) and a text target; a separate test file."""
    rng = np.random.default_rng(0)

    def rows(n):
        colour = rng.choice(["red", "green", "blue"], n)
        size = rng.normal(10, 3, n).round(2)
        label = np.where((size > 10) ^ (colour == "red"), "big", "small")
        return pd.DataFrame({"size": size, "colour": colour, "label": label})

    (runs_root / "shop").mkdir()
    rows(80).to_csv(runs_root / "shop" / "train.csv", index=False)
    rows(12).to_csv(runs_root / "shop" / "test.csv", index=False)
    return runs_root / "shop"


def test_one_hot_columns_are_rebuilt_from_the_recorded_categories(runs_store, runs_client, shop, runs_root):
    run_id = train_run(runs_store, "dataset=csv_table", f"dataset.path={shop / 'train.csv'}",
                       f"dataset.test_path={shop / 'test.csv'}", "dataset.target=label", "model.widths=[8]",
                       "trainer.epochs=2")
    record = json.loads(Path(runs_client.download_artifacts(run_id, "preprocessing.json", str(runs_root))).read_text())
    assert record["features"] == ["size", "colour"] and ["colour", "red"] in record["sources"]
    frame = predict(run_id, [shop / "test.csv"], out=runs_root / "out-shop", uri=runs_client.tracking_uri)
    data = run_data(runs_client, run_id)
    chosen(frame, model_probabilities(run_model(runs_client, run_id), data.test[0]))
    assert set(frame["class"]) <= {"big", "small"}
    unseen = runs_root / "unseen.csv"
    unseen.write_text("size,colour\n12.5,purple\n")  # a category training never saw sets no one-hot column
    assert len(predict(run_id, [unseen], out=runs_root / "out-unseen", uri=runs_client.tracking_uri)) == 1


def test_airline_forecasts_are_in_passengers_with_the_differenced_value_added_back(runs_store, runs_client, runs_root):
    series_file = make_airline(runs_root / "airline" / "airline-passengers.csv", months=60)
    run_id = train_run(runs_store, "dataset=airline", f"dataset.path={series_file.parent}", "dataset.window=6",
                       "dataset.difference=1", "model=lstm", "model.units=[4]", "trainer.epochs=1",
                       "trainer.batch_size=16")
    frame = predict(run_id, [series_file], out=runs_root / "out-airline", uri=runs_client.tracking_uri)
    series = pd.read_csv(series_file)["Passengers"].to_numpy(np.float64)
    assert frame["row"].tolist() == list(range(7, 61))  # every month with a full window, and the next one
    data = run_data(runs_client, run_id)
    n_test = len(data.test[0])
    scaled = run_model(runs_client, run_id).predict(data.test[0], verbose=0).reshape(-1)
    factor = data.target_scale[1]
    expected = scaled * factor + series[60 - n_test - 1: 60 - 1]  # the change, added to last month's value
    assert np.allclose(frame["value"].to_numpy()[-n_test - 1:-1], expected, rtol=1e-5)


# --- segmentation ---------------------------------------------------------------------------------------------------

def test_segmentation_writes_class_index_masks_and_the_share_of_each_class(runs_store, runs_client, runs_root):
    run_id = train_run(runs_store, "dataset=scenes", "dataset.count=40", "dataset.canvas_size=[16,16]",
                       "dataset.item_size=[6,8]", "dataset.items=[1,2]", "model=unet", "model.depth=2",
                       "model.filters=4", "trainer.epochs=1", "trainer.batch_size=8")
    data = run_data(runs_client, run_id)
    folder = runs_root / "canvases"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(data.test[0][i]).save(folder / f"scene{i}.png")
    out = runs_root / "out-scenes"
    frame = predict(run_id, [folder], out=out, uri=runs_client.tracking_uri)
    expected = run_model(runs_client, run_id).predict(data.test[0][:3], verbose=0).argmax(-1)
    for i, path in enumerate(frame["mask"]):
        mask = np.asarray(Image.open(path))
        assert Path(path) == out / "masks" / f"scene{i}.png" and np.array_equal(mask, expected[i])
    shares = frame[[c for c in frame.columns if c.startswith("share_")]]
    assert shares.columns[0] == "share_background" and len(shares.columns) == 11
    assert np.allclose(shares.sum(axis=1), 1, atol=1e-4)
    assert np.isclose(shares["share_background"][0], np.mean(expected[0] == 0), atol=1e-4)
    assert (out / "predictions.png").stat().st_size > 0


# --- runs and the command line ----------------------------------------------------------------------------------------

def test_an_unknown_run_id_is_one_sentence(digits_run, runs_client, runs_root):
    with pytest.raises(NnlabError, match="No run 'f00' in this store"):
        predict("f00", [runs_root], out=runs_root / "out-unknown", uri=runs_client.tracking_uri)


def test_a_run_without_a_model_is_one_sentence(digits_run, runs_client, runs_root):
    bare = copy_run(runs_client, digits_run, EXPERIMENT, ["config.yaml"], {"task": "classification"})
    with pytest.raises(NnlabError, match=f"Run {bare} has no model/model.keras"):
        predict(bare, [runs_root], out=runs_root / "out-bare", uri=runs_client.tracking_uri)


def test_the_command_line_takes_a_runs_uri_and_writes_to_predictions_run_id(digits_run, runs_client, runs_root,
                                                                          monkeypatch, capsys):
    monkeypatch.chdir(runs_root)
    np.save(runs_root / "two.npy", run_data(runs_client, digits_run).test[0][:2])
    predict_module.main([f"runs:/{digits_run}/model", "two.npy", "--uri", runs_client.tracking_uri,
                         "--batch-size", "1"])
    written = pd.read_csv(runs_root / "predictions" / digits_run / "predictions.csv")
    assert len(written) == 2 and {"input", "row", "class", "probability", "top3"} <= set(written.columns)
    assert f"2 predictions of run {digits_run} written to predictions/{digits_run}/" in capsys.readouterr().out


# --- plugins a stored run lists run only with the user's say ------------------------------------------------------------

def test_predict_refuses_a_plugin_named_only_in_the_stored_config_without_importing_it(digits_run, runs_client,
                                                                                       runs_root, capsys):
    from nnlab.cli import guarded, subcommand

    plugin, marker = marker_plugin(runs_root, "planted_predict")
    run = run_listing_plugin(runs_client, digits_run, plugin)
    np.save(runs_root / "one.npy", run_data(runs_client, digits_run).test[0][:1])
    with pytest.raises(NnlabError) as err:
        predict(run, [runs_root / "one.npy"], out=runs_root / "out-planted", uri=runs_client.tracking_uri)
    message = str(err.value)
    assert f"lists plugin {plugin}," in message and f"--plugins {plugin}" in message and "--trust-plugins" in message
    assert "\n" not in message and not marker.exists()
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:  # the command line: one sentence on stderr, a non-zero exit
        guarded(lambda: subcommand("predict", [run, str(runs_root / "one.npy"), "--uri", runs_client.tracking_uri,
                                               "--out", str(runs_root / "out-planted")]))
    assert exit_.value.code != 0 and not marker.exists()
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and f"--plugins {plugin}" in lines[0]
    assert not (runs_root / "out-planted" / "predictions.csv").exists()


def test_predict_imports_the_plugin_passed_with_plugins_once_and_predicts(digits_run, runs_client, runs_root):
    plugin, marker = marker_plugin(runs_root, "passed_predict")
    run = run_listing_plugin(runs_client, digits_run, plugin)
    np.save(runs_root / "one.npy", run_data(runs_client, digits_run).test[0][:1])
    predict_module.main([run, str(runs_root / "one.npy"), "--uri", runs_client.tracking_uri, "--out",
                         str(runs_root / "out-passed"), "--plugins", str(plugin)])
    assert len(pd.read_csv(runs_root / "out-passed" / "predictions.csv")) == 1
    predict(run, [runs_root / "one.npy"], out=runs_root / "out-passed", uri=runs_client.tracking_uri,
            plugins=[str(plugin)])  # the same file again in this process: imported once, as a module is
    assert marker.read_text() == "imported\n"


def test_predict_with_trust_plugins_imports_the_plugin_the_stored_config_lists(digits_run, runs_client, runs_root):
    plugin, marker = marker_plugin(runs_root, "trusted_predict")
    run = run_listing_plugin(runs_client, digits_run, plugin)
    np.save(runs_root / "one.npy", run_data(runs_client, digits_run).test[0][:1])
    predict_module.main([run, str(runs_root / "one.npy"), "--uri", runs_client.tracking_uri, "--out",
                         str(runs_root / "out-trusted"), "--trust-plugins"])
    assert marker.read_text() == "imported\n"
    assert len(pd.read_csv(runs_root / "out-trusted" / "predictions.csv")) == 1

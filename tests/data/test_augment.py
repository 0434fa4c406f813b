import dataclasses
import os

import numpy as np
import pytest

from nnlab.config.data import AugmentConfig
from nnlab.data.augment import augmentation_layers, input_layers
from nnlab.errors import NnlabError
from nnlab.models import build_model


def layers_for(seed=0, **options):
    return augmentation_layers(**dataclasses.asdict(AugmentConfig(**options)), seed=seed)


def test_the_default_augment_config_adds_no_layers():
    assert layers_for() == []
    assert input_layers(None, AugmentConfig(), seed=0) == []


def test_each_option_adds_its_layer():
    layers = layers_for(flip="horizontal", rotation=0.1, zoom=0.1, shift=0.1, contrast=0.2, brightness=0.2, seed=0)
    assert [l.name for l in layers] == ["aug_flip", "aug_rotation", "aug_zoom", "aug_shift", "aug_contrast",
                                        "aug_brightness"]


def test_augmentation_changes_training_inputs_only():
    layers = layers_for(flip="horizontal", shift=0.2, fill_mode="constant", seed=1)
    model = build_model({"name": "mlp", "widths": [4]}, (8, 8, 1), "classification", 2, layers)
    x = np.random.default_rng(0).random((16, 8, 8, 1)).astype("float32")
    augment = model.get_layer("aug_shift")
    flipped = model.get_layer("aug_flip")
    assert np.allclose(augment(flipped(x, training=False), training=False), x)
    assert not np.allclose(augment(flipped(x, training=True), training=True), x)
    # inference through the whole model is deterministic
    assert np.allclose(model.predict(x, verbose=0), model.predict(x, verbose=0))


def test_unknown_flip_mode():
    with pytest.raises(NnlabError, match="did you mean 'horizontal'"):
        layers_for(flip="horizontl")


# --- augment.library=albumentations: transforms in the input pipeline (pip install -e '.[albumentations]') ---

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # its import would ask PyPI for a newer version

EXACT = [{"name": "HorizontalFlip", "p": 0.5}, {"name": "VerticalFlip", "p": 0.5}, {"name": "RandomRotate90", "p": 0.5}]


def albumentations_config(transforms=EXACT):
    pytest.importorskip("albumentations")
    return AugmentConfig(library="albumentations", transforms=transforms)


def test_albumentations_moves_each_mask_with_its_image_for_segmentation():
    from nnlab.tasks import get_task

    image_only, transform = get_task("segmentation").augmentation(albumentations_config(), seed=0)
    assert image_only == AugmentConfig()  # nothing left for the model's layers
    masks = np.random.default_rng(0).integers(0, 3, (16, 12, 12)).astype(np.uint8)
    images = np.repeat(masks[..., None] * 80, 3, axis=-1)  # each pixel's colour encodes its class
    x, y = transform(images, masks, np.random.default_rng(1))
    assert x.shape == images.shape and x.dtype == np.uint8 and y.shape == masks.shape
    assert np.array_equal(x[..., 0], y * 80)  # image and mask moved together, pixel for pixel
    assert sum(not np.array_equal(a, b) for a, b in zip(y, masks)) >= 8  # most of the 16 were moved


def test_albumentations_changes_images_only_and_keeps_targets_and_shapes_for_classification_and_regression():
    from nnlab.tasks import get_task

    cfg = albumentations_config([{"name": "Affine", "translate_percent": 0.2, "rotate": [-30, 30], "p": 1.0}])
    images = np.random.default_rng(0).random((6, 8, 8, 1)).astype("float32")  # grayscale: one channel kept
    for task in ("classification", "regression"):
        image_only, transform = get_task(task).augmentation(cfg, seed=0)
        assert input_layers(None, image_only, seed=0) == []
        targets = np.arange(6, dtype=np.float32)
        x, y = transform(images, targets, np.random.default_rng(0))
        assert x.shape == images.shape and x.dtype == np.float32 and y is targets
        assert not np.allclose(x, images)


def test_albumentations_draws_follow_the_batch_generator():
    from nnlab.data.augment import AlbumentationsTransform

    transform = AlbumentationsTransform(albumentations_config().transforms)
    images = np.random.default_rng(0).integers(0, 255, (32, 6, 6, 3)).astype(np.uint8)

    def run(seed):
        return transform(images, None, np.random.default_rng(seed))[0]

    assert np.array_equal(run([7, 0, 1]), run([7, 0, 1]))  # the pipeline's rng per (seed, epoch, batch)
    assert not np.array_equal(run([7, 0, 1]), run([7, 0, 2]))


def test_albumentations_reaches_training_batches_through_the_pipeline_threads():
    from nnlab.data.augment import AlbumentationsTransform
    from nnlab.data.pipeline import batches

    images = np.random.default_rng(0).integers(0, 255, (64, 6, 6, 3)).astype(np.uint8)
    flip = AlbumentationsTransform(albumentations_config([{"name": "HorizontalFlip", "p": 1.0}]).transforms)
    feed = batches(images, np.arange(64), 16, shuffle=False, transform=flip, threads=2)
    x, y = feed[1]
    assert np.array_equal(x, images[16:32, :, ::-1]) and list(y) == list(range(16, 32))


def test_a_transform_that_resizes_is_refused_in_one_sentence():
    from nnlab.data.augment import AlbumentationsTransform

    crop = AlbumentationsTransform(albumentations_config([{"name": "CenterCrop", "height": 4, "width": 4}]).transforms)
    with pytest.raises(NnlabError, match=r"turned a \(8, 8, 3\) image into \(4, 4, 3\).*keep it"):
        crop(np.zeros((2, 8, 8, 3), np.uint8), None, np.random.default_rng(0))


def test_detection_refuses_albumentations():
    from nnlab.tasks import get_task

    with pytest.raises(NnlabError, match="augment.library=albumentations is not wired to move detection boxes"):
        get_task("detection").augmentation(albumentations_config(), seed=0)


@pytest.mark.parametrize("options, message", [
    ({"transforms": [{"name": "HorizntalFlip"}]}, r"Unknown augment.transforms.0.name 'HorizntalFlip'.*"
                                                   r"did you mean 'HorizontalFlip'\?"),
    ({"transforms": [{"name": "Affine", "rotat": 10}]}, r"Affine has no argument 'rotat'.*did you mean 'rotate'"),
    ({"transforms": [{"name": "HorizontalFlip", "p": 2}]}, r"albumentations refuses HorizontalFlip with \{'p': 2\}"),
    ({"transforms": ["HorizontalFlip"]}, r"augment.transforms.0='HorizontalFlip' must be a mapping"),
    ({"transforms": []}, "No transforms are listed: augment.library=albumentations applies augment.transforms"),
    ({"transforms": EXACT, "flip": "horizontal"}, "augment.flip is a Keras layer option"),
])
def test_bad_albumentations_config_gets_one_sentence_naming_the_key(options, message):
    from nnlab.errors import ConfigError

    pytest.importorskip("albumentations")
    with pytest.raises(ConfigError, match=message):
        AugmentConfig(**{"library": "albumentations", **options})


def test_transforms_without_the_albumentations_library_are_refused():
    from nnlab.errors import ConfigError

    with pytest.raises(ConfigError, match="augment.transforms is read only with augment.library=albumentations"):
        AugmentConfig(transforms=EXACT)
    with pytest.raises(ConfigError, match="did you mean 'albumentations'"):
        AugmentConfig(library="albumentation")


def test_a_job_with_albumentations_trains_and_saves_a_model_without_augmentation_layers(store):
    from hydra import compose, initialize_config_module
    from mlflow.tracking import MlflowClient

    from nnlab.job import app

    pytest.importorskip("albumentations")
    with initialize_config_module(config_module="nnlab.conf", version_base="1.3"):
        cfg = compose(config_name="config", overrides=[
            f"tracking.uri={store}", "tracking.experiment=albu", "trainer.verbose=0", "trainer.plot_model=false",
            "trainer.checkpoint=false",
            "trainer.epochs=1", "model.width=16", "augment.library=albumentations",
            "augment.transforms=[{name: Affine, translate_percent: 0.1, p: 0.5}]"])
    app.run(cfg)
    client = MlflowClient(store)
    (run,) = client.search_runs([client.get_experiment_by_name("albu").experiment_id])
    assert run.info.status == "FINISHED" and run.data.params["augment.library"] == "albumentations"
    summary = client.download_artifacts(run.info.run_id, "model_summary.txt")
    assert "aug_" not in open(summary).read()  # the augmentation ran in the pipeline, not in the model

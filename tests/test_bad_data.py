"""Bad input met while a job runs (missing, empty or corrupt data in each layout, a model that does not fit the
data, an unusable store, a plugin that cannot load): exit 1, one actionable line naming the problem, no
traceback, and no run left RUNNING."""

from pathlib import Path

import pytest
from data_fixtures import corrupt, make_boston, make_faces, make_image_tree, make_segmentation_folder
from mlflow.tracking import MlflowClient
from PIL import Image

QUICK = ["trainer.epochs=1", "trainer.plot_model=false", "trainer.save_model=false", "trainer.verbose=0"]


def broken_images(root: Path) -> Path:
    make_image_tree(root / "train", ["a", "b"], 4, seed=1)
    for f in list((root / "train" / "a").iterdir())[:3]:
        corrupt(f)
    return root


def empty_classes(root: Path) -> Path:
    for name in ("a", "b"):
        (root / "train" / name).mkdir(parents=True)
    return root


def faces_without_images(root: Path) -> Path:
    make_faces(root, n=6)
    for f in (root / "final_files").iterdir():
        f.unlink()
    return root


def masks_with_a_bad_value(root: Path) -> Path:
    make_segmentation_folder(root)
    mask = sorted((root / "train" / "masks").iterdir())[0] if (root / "train").is_dir() else \
        sorted((root / "masks").iterdir())[0]
    pixels = Image.open(mask)
    pixels.putpixel((0, 0), 7)
    pixels.save(mask)
    return root


def bad_csv(root: Path) -> Path:
    root.mkdir(parents=True)
    (root / "t.csv").write_text("a,b\n1,2\n3,4\n")
    return root / "t.csv"


# (name, fixture building data under tmp_path or None, overrides, fragments of the one error line)
CASES = [
    ("missing image folder", None, ["dataset=image_folder", "dataset.path=nowhere"], ["nowhere", "does not exist"]),
    ("empty class folders", empty_classes, ["dataset=image_folder", "dataset.path={data}"], ["No images found"]),
    ("mostly corrupt images", broken_images, ["dataset=image_folder", "dataset.path={data}"],
     ["cannot be read", "max_bad_fraction"]),
    ("missing fashion files", None, ["dataset=fashion_mnist", "dataset.path=nowhere", "dataset.download=false"],
     ["nowhere"]),
    ("missing cifar copy", None, ["dataset=cifar10", "dataset.path=nowhere"], ["nowhere"]),
    ("missing notmnist copy", None, ["dataset=notmnist", "dataset.path=nowhere"], ["nowhere"]),
    ("missing boston table", None, ["dataset=boston", "dataset.path=nowhere"], ["housing.data", "nowhere"]),
    ("missing airline csv", None, ["dataset=airline", "dataset.path=nowhere", "model=lstm"], ["nowhere"]),
    ("faces without images", faces_without_images, ["dataset=faces", "dataset.path={data}"], ["{data}"]),
    ("missing faces labels", None, ["dataset=faces", "dataset.path=nowhere"], ["nowhere"]),
    ("csv without its target", bad_csv, ["dataset=csv_table", "dataset.path={data}", "dataset.target=price"],
     ["no column 'price'", "a, b"]),
    ("mask value outside the classes", masks_with_a_bad_value,
     ["dataset=segmentation_folder", "dataset.path={data}", "dataset.classes=[a,b,c]", "model=unet",
      "model.depth=1"], ["has value 7", "3 classes"]),
    ("missing segmentation folder", None, ["dataset=segmentation_folder", "dataset.path=nowhere", "model=unet"],
     ["nowhere"]),
    ("scenes from missing fashion files", None, ["dataset=scenes", "dataset.source=fashion_mnist",
                                                  "dataset.path=nowhere", "model=unet"], ["Fashion-MNIST", "nowhere"]),
    ("cnn on a table", "boston", ["dataset=boston", "dataset.path={data}", "model=cnn"],
     ["model 'cnn' needs images", "rows of 13 values"]),
    ("lstm on images", None, ["model=lstm"], ["model 'lstm' needs sequences"]),
    ("unet on a table", "boston", ["dataset=boston", "dataset.path={data}", "model=unet"], ["needs images"]),
    ("mlp on masks", None, ["dataset=scenes", "dataset.count=20"], ["segmentation head needs a feature map",
                                                                    "model=unet"]),
    ("unet depth too deep for the size", None, ["dataset=scenes", "dataset.count=20", "dataset.canvas_size=[24,24]",
                                                "dataset.item_size=[6,8]", "model=unet", "model.depth=4"],
     ["divisible by 16"]),
    ("ensemble of a ten-class head", None, ["model.ensemble=2"], ["model.ensemble=2", "set model.ensemble=1"]),
    ("an unreachable parameter budget", None, ["model.param_budget=10"], ["param_budget=10 cannot be met"]),
    ("a model over max_params", None, ["model.max_params=100"], ["over model.max_params=100"]),
    ("missing transfer weights", None, ["model=transfer", "dataset=scenes", "dataset.target=masks",
                                        "model.weights=missing.keras"], ["missing.keras"]),
    ("a diverging learning rate", None, ["optimizer=sgd", "optimizer.learning_rate=1e6"],
     ["diverged", "lower optimizer.learning_rate"]),
    ("a missing plugin file", None, ["plugins=[nothere.py]"], ["nothere.py", "does not exist"]),
    ("an unreachable store", None, ["tracking.uri=http://127.0.0.1:9"], ["http://127.0.0.1:9", "cannot be reached"]),
    ("an unwritable store", None, ["tracking.uri=sqlite:////proc/nnlab/x.db"], ["/proc"]),
]




@pytest.mark.parametrize(("name", "make", "overrides", "fragments"), CASES, ids=[c[0] for c in CASES])
def test_bad_data_or_a_mismatch_fails_in_one_line_and_leaves_no_run_running(nnlab_main, tmp_path, name, make, overrides,
                                                                            fragments):
    data = tmp_path / "data"
    if make == "boston":
        make_boston(data / "housing.data", rows=60)
    elif make is not None:
        data = make(data) or data
    store = tmp_path / "mlflow.db"
    args = [o.format(data=data) for o in overrides]
    if not any(a.startswith("tracking.uri=") for a in args):
        args.append(f"tracking.uri=sqlite:///{store}")
    status, lines = nnlab_main(*QUICK, "tracking.experiment=bad", *args)
    errors = [line for line in lines if line.startswith("nnlab: error:")]
    assert status == 1, lines
    assert len(errors) == 1 and lines[-1] == errors[0], lines
    assert not any("Traceback" in line for line in lines)
    for fragment in fragments:
        assert fragment.format(data=data) in errors[0]
    if store.exists():
        client = MlflowClient(f"sqlite:///{store}")
        runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
        assert all(r.info.status == "FAILED" for r in runs), [r.info.status for r in runs]

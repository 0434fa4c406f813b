"""trainer.netron: Netron's drawing of the saved model as the run's netron.png (nnlab.job.netron_view).

The `ui` tests need Chromium, playwright and netron (`make test-ui` installs them) and skip with the reason
elsewhere, like tests/test_ui.py; the last test runs everywhere: without Chromium the run still finishes, tagged.
"""

import logging
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_module
from mlflow.tracking import MlflowClient

from nnlab.job import app, netron_view

TINY = ("dataset.limit=200", "model.width=8", "trainer.epochs=1", "trainer.verbose=0", "trainer.plot_model=false",
        "trainer.checkpoint=false", "trainer.netron=true")


@pytest.fixture
def netron_ready() -> None:
    why = netron_view.missing()
    if why:
        pytest.skip(f"{why}; make test-ui")


def job(store: str, *overrides: str):
    """The composed job in this process (as tests/test_app.py): the run and its top-level artifact paths."""
    with initialize_config_module(config_module="nnlab.conf", version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"tracking.uri={store}", "tracking.experiment=netron",
                                                       *TINY, *overrides])
    app.run(cfg)
    client = MlflowClient(store)
    (run,) = client.search_runs([client.get_experiment_by_name("netron").experiment_id])
    return run, {a.path for a in client.list_artifacts(run.info.run_id)}


def keep(png: Path) -> None:
    """Copy the picture to $NNLAB_UI_SCREENSHOT_DIR when set (`make test-ui`: outputs/ui-check/)."""
    if os.environ.get("NNLAB_UI_SCREENSHOT_DIR"):
        Path(os.environ["NNLAB_UI_SCREENSHOT_DIR"]).mkdir(parents=True, exist_ok=True)
        shutil.copy2(png, os.environ["NNLAB_UI_SCREENSHOT_DIR"])


def assert_a_drawing(png: Path) -> None:
    """A real PNG of the graph: an image of some size, not a blank page."""
    from PIL import Image

    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(png) as image:
        width, height = image.size
        gray = np.asarray(image.convert("L"))
    assert width >= 100 and height >= 300, image.size  # four layers stacked: taller than wide
    assert png.stat().st_size > 5000
    assert gray.std() > 10 and len(np.unique(gray)) > 20  # boxes, text and edges, not one flat colour


@pytest.mark.ui
@pytest.mark.parametrize("fmt", ["h5", "keras"])
def test_a_saved_model_is_drawn_by_netron_and_a_bad_file_is_a_reason(netron_ready, tmp_path, fmt):
    import keras
    import netron

    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu", name="hidden"),
                              keras.layers.Dropout(0.1), keras.layers.Dense(3, activation="softmax", name="head")])
    model.save(tmp_path / f"tiny.{fmt}")
    png = tmp_path / f"netron-{fmt}.png"
    assert netron_view.render(tmp_path / f"tiny.{fmt}", png) is None
    assert_a_drawing(png)
    keep(png)

    (tmp_path / f"junk.{fmt}").write_bytes(np.random.default_rng(0).bytes(4096))
    why = netron_view.render(tmp_path / f"junk.{fmt}", tmp_path / "junk.png", timeout_s=20)
    assert why.startswith(f"Netron did not draw junk.{fmt} (") and not (tmp_path / "junk.png").exists()
    for _ in range(40):  # every server it started is stopped (its thread notices within 0.25 s)
        if not netron.status():
            break
        time.sleep(0.05)
    assert not netron.status()


@pytest.mark.ui
def test_a_job_with_trainer_netron_logs_netron_png(netron_ready, store, tmp_path, monkeypatch):
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    run, paths = job(store, "trainer.save_h5=true")
    assert run.info.status == "FINISHED" and "netron" not in run.data.tags
    assert "netron.png" in paths and run.data.params["trainer.netron"] == "True"
    png = Path(MlflowClient(store).download_artifacts(run.info.run_id, "netron.png", str(tmp_path)))
    assert_a_drawing(png)


def test_without_chromium_the_run_finishes_tagged_and_warned(store, monkeypatch, caplog):
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    monkeypatch.setenv(netron_view.CHROMIUM_ENV, "/nonexistent/chromium")
    assert netron_view.missing().startswith("no Chromium executable at /nonexistent/chromium")
    with caplog.at_level(logging.WARNING, logger="nnlab.job.app"):
        run, paths = job(store)
    assert run.info.status == "FINISHED" and {"curves.png", "config.yaml"} <= paths
    assert run.data.tags["netron"] == ("skipped: no Chromium executable at /nonexistent/chromium "
                                       "(apt install chromium)")
    assert "netron.png" not in paths
    assert any("netron.png skipped: no Chromium" in r.getMessage() for r in caplog.records)

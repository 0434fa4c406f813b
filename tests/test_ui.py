"""A sweep as a person sees it: nnlab's own sweep of tiny digits jobs, then `mlflow server` on its store, opened
in headless Chromium.

Marker `ui`; `make test-ui` installs playwright and Debian's chromium. Elsewhere the test skips
with the reason (playwright cannot download its own browser here, so we drive the system one).
"""

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.ui
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright not installed (make test-ui)")

from nnlab.job.netron_view import find_chromium  # noqa: E402
from nnlab.tracking.track import ROLE_TAG, SWEEP_TAG  # noqa: E402  (the tags nnlab's sweeps write)

DEPTHS = (1, 2, 3)
CHILDREN = [f"model.depth={d}" for d in DEPTHS]  # nnlab names a sweep's jobs by the overrides that differ
COLUMNS = ["test_accuracy", "val_loss", "model.depth"]
# What nnlab logs beyond metrics and params, in the runs table's own columns (col-id attributes.`<name>`): the
# training split as a dataset input (with its context), the MLflow Model named after the run's model ("mlp").
LOGGED_COLUMNS = {"Dataset": ["digits-train", "Training"], "Models": ["mlp"]}
# Lean server. MLflow 3.17 defaults (4 uvicorn workers plus a huey job runner) measured 15 processes,
# 2.4 GB RSS and /health after 40 s on a 2-core box shared with a benchmark (2.7 GB, 14 s unloaded);
# `--workers 1` with MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false: 2 processes, 0.5 GB, 11-17 s (7 s unloaded).
LEAN_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
TIMEOUT_MS = 60_000  # the React bundle is large and the box is slow; be generous


@pytest.fixture
def chromium() -> str:
    """The system Chromium (nnlab.job.netron_view's lookup); NNLAB_CHROMIUM overrides it (=/nonexistent simulates none)."""
    found, looked = find_chromium()
    return found or pytest.skip(f"no Chromium executable at {', '.join(looked)}; make test-ui")


def run_sweep(uri: str, folder: Path) -> tuple[str, str]:
    """`nnlab -m model.depth=1,2,3` on digits, as a user runs it: (experiment id, the sweep's parent run name)."""
    from mlflow.tracking import MlflowClient

    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("HYDRA_FULL_ERROR", None)
    done = subprocess.run([sys.executable, "-m", "nnlab", "-m", f"model.depth={','.join(map(str, DEPTHS))}",
                           "model.width=16", "trainer.epochs=3", "trainer.plot_model=false", f"tracking.uri={uri}",
                           "tracking.experiment=ui-check", f"hydra.sweep.dir={folder}/sweep"],
                          cwd=folder, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    client = MlflowClient(uri)
    exp_id = client.get_experiment_by_name("ui-check").experiment_id
    (parent,) = [r for r in client.search_runs([exp_id]) if r.data.tags.get(ROLE_TAG) == "sweep"]
    assert parent.data.tags[SWEEP_TAG] == parent.info.run_name
    return exp_id, parent.info.run_name


def wait_healthy(proc: subprocess.Popen, url: str, log: Path, timeout: float = 60) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if proc.poll() is not None:
            pytest.fail(f"mlflow server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return time.monotonic() - start
        except OSError:
            time.sleep(0.3)
    pytest.fail(f"mlflow server not healthy after {timeout:.0f} s:\n{log.read_text()[-3000:]}")


@pytest.fixture
def server(tmp_path: Path, request):
    """`mlflow server` on a private store and port; its whole process group dies with the test."""
    db, artifacts, log = tmp_path / "mlflow.db", tmp_path / "mlartifacts", tmp_path / "server.log"
    exp_id, sweep = run_sweep(f"sqlite:///{db}", tmp_path)
    with socket.socket() as sock:  # a free port; the tiny race with other binders is acceptable
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{db}",
           "--default-artifact-root", str(artifacts), "--host", "127.0.0.1", "--port", str(port),
           "--workers", "1"]
    with log.open("w") as out:  # own session, so killpg also reaches the uvicorn worker it spawns
        proc = subprocess.Popen(cmd, env={**os.environ, **LEAN_ENV}, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    request.addfinalizer(lambda: stop(proc))
    print(f"mlflow server healthy after {wait_healthy(proc, f'http://127.0.0.1:{port}/health', log):.1f} s")
    return f"http://127.0.0.1:{port}", exp_id, sweep


def stop(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def keep(shot: Path) -> None:
    """Copy the screenshot to $NNLAB_UI_SCREENSHOT_DIR when set, so it outlives pytest's tmp dirs."""
    target = os.environ.get("NNLAB_UI_SCREENSHOT_DIR")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        shot = Path(shutil.copy2(shot, target))
    print(f"screenshot: {shot}")


def visible(locator) -> None:
    sync_api.expect(locator.first).to_be_visible(timeout=TIMEOUT_MS)


def expand_sweep(page, sweep: str) -> None:
    """MLflow lists a sweep's children collapsed under the parent row; its one button expands it."""
    if not page.get_by_text(CHILDREN[0], exact=True).first.is_visible():
        page.get_by_role("row").filter(has_text=sweep).get_by_role("button").first.click()


def show_columns(page) -> None:
    """MLflow 3.17 hides metric and param columns by default; tick them in the Columns picker."""
    if page.get_by_role("columnheader", name=COLUMNS[0]).count():
        return  # a UI version that shows them already
    page.get_by_role("button", name="Columns", exact=True).click()
    for name in COLUMNS:
        page.get_by_role("dialog").get_by_text(name, exact=True).click()
    page.keyboard.press("Escape")


def close_assistant(page, wait_ms: int = 3000) -> None:
    """3.17's side panel hides a third of the table; it opens on its own, a moment after a page (and again after
    the switch to Model training), so wait for it a little."""
    panel = page.locator("text=MLflow Assistant >> visible=true").first
    try:
        if wait_ms:
            panel.wait_for(state="visible", timeout=wait_ms)
        if panel.is_visible():
            page.locator('role=button[name="Close"] >> visible=true').first.click(timeout=5000)
    except sync_api.TimeoutError:
        pass  # it did not open, or it closed by itself


def open_model_training(page) -> None:
    """The toggle at the top left of an experiment's page: GenAI (3.17's default, whatever the experiment's
    mlflow.experimentKind tag says) or Model training, whose side bar has Runs, Models and the Model registry."""
    page.get_by_text("Model training", exact=True).first.click()
    sync_api.expect(page).to_have_url(re.compile(r"workflowType=machine_learning"), timeout=TIMEOUT_MS)
    visible(page.get_by_text("Model registry", exact=True))
    assert not page.get_by_text("Training runs", exact=True).count()  # GenAI's name for the runs page


def check_logged_columns(page) -> None:
    """Each child's Dataset and Models cells show what nnlab logged, not "-". The table is split in pinned and
    scrolling parts, so a child's cells are found by its row index."""
    for name in CHILDREN:
        index = page.get_by_role("row").filter(has_text=name).first.get_attribute("row-index")
        for column, words in LOGGED_COLUMNS.items():
            cell = page.locator(f'[role="row"][row-index="{index}"] [col-id="attributes.`{column}`"]').first
            for word in words:
                sync_api.expect(cell).to_contain_text(word, ignore_case=True, timeout=TIMEOUT_MS)
            assert cell.inner_text().strip() not in ("", "-"), f"{name}: {column} is empty"


def check_runs_page(page, url: str, sweep: str) -> None:
    page.goto(url)
    visible(page.get_by_text(sweep, exact=True))
    close_assistant(page)
    open_model_training(page)
    close_assistant(page)
    expand_sweep(page, sweep)
    show_columns(page)
    for name in CHILDREN:
        visible(page.get_by_text(name, exact=True))
    for column in COLUMNS:
        visible(page.get_by_role("columnheader", name=column))
    for depth in DEPTHS:  # the swept parameter's values, in their column
        visible(page.get_by_text(str(depth), exact=True))
    close_assistant(page, wait_ms=0)  # back since the switch? then the screenshot shows the whole table
    check_logged_columns(page)


def test_sweep_runs_and_metrics_visible(chromium, server, tmp_path):  # chromium first: skip before starting
    base, exp_id, sweep = server
    shot = tmp_path / "mlflow-ui-runs.png"
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1920, "height": 1000})
        page.set_default_timeout(TIMEOUT_MS)
        try:
            check_runs_page(page, f"{base}/#/experiments/{exp_id}/runs", sweep)
        finally:  # a screenshot of a failure is the most useful one
            page.screenshot(path=str(shot), full_page=True)
            keep(shot)
            browser.close()

"""Netron's drawing of a saved model (trainer.netron): the `netron` package serves the file on 127.0.0.1, the
system's headless Chromium (driven by playwright) opens it, and Netron's own "Export as PNG" writes the whole
graph. Optional: `render` returns why not (no Chromium, playwright or netron; a page that fails or times out)
instead of raising, and imports neither playwright nor netron until it is called."""

import datetime
import os
import re
import shutil
import time
from pathlib import Path

CHROMIUM_ENV = "NNLAB_CHROMIUM"  # an executable to use instead of the lookup; =/nonexistent simulates none
TIMEOUT_S = 60  # for the page to draw the graph, and again for the export (a slow box, a big graph)
INSTALL = "pip install 'nnlab[ui]' (playwright, netron) and apt install chromium"


def find_chromium() -> tuple[str | None, list[str]]:
    """The system Chromium (playwright cannot download its own browser offline): $NNLAB_CHROMIUM when set,
    else /usr/bin/chromium, else chromium or chromium-browser on PATH. Returns (the executable or None, the
    places looked at)."""
    override = os.environ.get(CHROMIUM_ENV)
    candidates = [override] if override else [
        "/usr/bin/chromium", shutil.which("chromium"), shutil.which("chromium-browser")]
    looked = [c for c in candidates if c]
    return next((c for c in looked if os.access(c, os.X_OK)), None), looked


def missing() -> str | None:
    """Why Netron cannot draw here (one sentence), or None."""
    import importlib.util

    chromium, looked = find_chromium()
    if chromium is None:
        return f"no Chromium executable at {', '.join(looked) or 'chromium on PATH'} (apt install chromium)"
    for package in ("playwright", "netron"):
        if importlib.util.find_spec(package) is None:
            return f"{package} is not installed ({INSTALL})"
    return None


def render(model_file: str | Path, png: str | Path, timeout_s: float = TIMEOUT_S) -> str | None:
    """Write Netron's picture of `model_file` (.h5, .keras, anything Netron reads) to `png`; returns why not."""
    why = missing()
    if why:
        return why
    import logging

    logging.getLogger("netron").setLevel(logging.WARNING)  # not its "Serving ... at <a URL gone a second later>"
    model_file, address = Path(model_file), None
    try:
        import netron

        address = netron.start(str(model_file), address=("127.0.0.1", 0), browse=False)  # 0: a free port
        export(f"http://{address[0]}:{address[1]}", Path(png), find_chromium()[0], 1000 * timeout_s)
        return None
    except Exception as err:  # an optional picture: the run goes on, the reason is its tag
        what = (str(err).strip().splitlines() or [""])[0]
        return f"Netron did not draw {model_file.name} ({type(err).__name__}: {what})"
    finally:
        if address is not None:
            netron.stop(address)


def export(origin: str, png: Path, chromium: str, timeout_ms: float) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox"])
        try:
            context = browser.new_context(accept_downloads=True, viewport={"width": 1280, "height": 800})
            # Netron's page waits for a click on its cookie notice unless this cookie says it was accepted.
            context.add_cookies([{"name": "consent", "value": str(int(1000 * time.time())), "url": origin}])
            page = context.new_page()
            page.route("**/*", lambda route: local_only(route, origin))
            page.set_default_timeout(timeout_ms)
            page.goto(f"{origin}/")
            # The graph is drawn once the body's class is `default`; an error shows a message instead.
            page.wait_for_selector("body.default #canvas .graph-node, body.alert, body.notification",
                                   state="attached")
            if not page.locator("body.default #canvas .graph-node").count():
                raise RuntimeError(page.locator("#message-text").inner_text().strip() or "Netron showed a message")
            with page.expect_download() as download:
                page.keyboard.press("Control+Shift+E")  # File > Export as PNG: the whole graph, not the window
            download.value.save_as(png)
        finally:
            browser.close()


def local_only(route, origin: str) -> None:
    """Serve the page from netron's local server and nothing else (no ipinfo.io, no telemetry). Netron's page
    refuses to draw once its release is 180 days old ("Please update"): index.html is told it was released
    today."""
    url = route.request.url
    if not url.startswith(f"{origin}/"):
        route.abort()
    elif url.split("?")[0] in (f"{origin}/", f"{origin}/index.html"):
        response = route.fetch()
        today = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S")
        body = re.sub(r'<meta name="date" content="[^"]*">', f'<meta name="date" content="{today}">',
                      response.text())
        route.fulfill(response=response, body=body)
    else:
        route.continue_()


def log_drawing(run, model, fmt: str) -> None:
    """Netron's drawing of the model saved as model.<fmt>, as netron.png; where Chromium, playwright or netron
    is missing, or Netron fails, a tag says so instead, and a warning. `run`: the job's tracker (its `tags` and
    `file`), handed in: this module does not import tracking."""
    import logging
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        saved, path = Path(tmp) / f"model.{fmt}", Path(tmp) / "netron.png"
        why = missing()
        if not why:
            absl, level = logging.getLogger("absl"), logging.getLogger("absl").level
            absl.setLevel(logging.ERROR)  # Keras's "HDF5 is legacy" warning was shown once, by the run's own save
            try:
                model.save(saved)
            except Exception as err:  # the picture is optional; the run's own save is run.model's
                why = f"Keras could not save {saved.name} for Netron ({type(err).__name__}: {err})"
            finally:
                absl.setLevel(level)
            why = why or render(saved, path)
        if why:
            run.tags({"netron": f"skipped: {why}"})
            logging.getLogger(__name__).warning("netron.png skipped: %s", why)
        else:
            run.file(path)

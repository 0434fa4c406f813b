"""notebooks/lab_report.ipynb runs top to bottom: a tiny sweep on the bundled digits, then its table and figures."""

import os
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "lab_report.ipynb"


def test_lab_report_notebook_executes_and_shows_table_and_figures(tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat", reason="the test extra installs nbformat")
    nbclient = pytest.importorskip("nbclient", reason="the test extra installs nbclient")
    for key in ("NNLAB_REPORT_URI", "NNLAB_SWEEP_ID"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("NNLAB_NOTEBOOK_EPOCHS", "1")
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "3")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    html = "".join(o.get("data", {}).get("text/html", "") for o in outputs)
    assert "model.depth" in html and "model.width" in html and html.count("FINISHED") == 4
    assert sum("image/png" in o.get("data", {}) for o in outputs) == 2
    text = "".join(o.get("text", "") for o in outputs)
    assert "best run:" in text and "table.tex" in text
    assert os.environ.get("NNLAB_REPORT_URI") is None

"""The configs are package data: a built wheel runs outside the checkout, console script included."""

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(REPO)],
                   check=True, capture_output=True, timeout=600)
    return next(out.glob("nnlab-*.whl"))


def test_wheel_carries_every_config(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    packaged = {p.relative_to(REPO / "src").as_posix() for p in (REPO / "src/nnlab/conf").rglob("*.yaml")}
    assert packaged and packaged <= names
    assert "nnlab/conf/experiment/fashion_cnn_adam.yaml" in names


def test_installed_wheel_composes_configs_outside_the_checkout(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, capture_output=True, timeout=600)
    env = {**os.environ, "PYTHONPATH": str(target)}
    code = "import nnlab, sys; print(nnlab.__file__); sys.argv=['nnlab', '+experiment=fashion_mlp', '--cfg', 'job'];" \
           "from nnlab.cli import main; main()"
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0].startswith(str(target)), "the wheel, not the checkout, must be imported"
    assert "widths:" in out.stdout and "name: fashion_mnist" in out.stdout
    script = target / "bin" / "nnlab"
    assert script.exists(), "the console script `nnlab` is installed"

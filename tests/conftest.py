"""Shared fixtures: tiny generated datasets and private MLflow stores. No network, never ../shared."""

import gzip
import os
import struct
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
IDX_CODES = {np.uint8: 0x08, np.int8: 0x09, np.int16: 0x0B, np.int32: 0x0C, np.float32: 0x0D}


def write_idx(path: Path, array: np.ndarray, compress: bool = True) -> Path:
    code = IDX_CODES[array.dtype.type]
    header = bytes([0, 0, code, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    payload = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if compress:
        with gzip.open(path, "wb") as f:
            f.write(payload)
    else:
        path.write_bytes(payload)
    return path


def make_idx_dataset(root: Path, n_train: int = 300, n_test: int = 100, classes: int = 10, seed: int = 0,
                     compress: bool = True) -> Path:
    """MNIST-layout files whose classes are learnable: class k lights up a bright stripe at row 2k+3."""
    rng = np.random.default_rng(seed)
    suffix = ".gz" if compress else ""
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = np.arange(n) % classes
        rng.shuffle(labels)
        images = rng.integers(0, 60, size=(n, 28, 28)).astype(np.uint8)
        for i, k in enumerate(labels):
            images[i, 2 * k + 3 : 2 * k + 5, 4:24] = 250
        write_idx(root / f"{prefix}-images-idx3-ubyte{suffix}", images, compress)
        write_idx(root / f"{prefix}-labels-idx1-ubyte{suffix}", labels.astype(np.uint8), compress)
    return root


@pytest.fixture
def idx_dir(tmp_path: Path) -> Path:
    return make_idx_dataset(tmp_path / "fashion-mnist")


@pytest.fixture
def store(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


# One store per test module for tests of finished runs (predict, evaluate): each tiny run is trained once per module.
@pytest.fixture(scope="module")
def runs_root(tmp_path_factory, request) -> Path:
    """The module's folder: its store, its generated data, its outputs."""
    return tmp_path_factory.mktemp(request.module.__name__.rpartition(".")[2].removeprefix("test_"))


@pytest.fixture(scope="module")
def runs_store(runs_root: Path) -> str:
    return f"sqlite:///{runs_root / 'mlflow.db'}"


@pytest.fixture(scope="module")
def runs_client(runs_store: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(runs_store)


@pytest.fixture(scope="module")
def digits_run(runs_store: str) -> str:
    """A finished run of the bundled digits (a small MLP), in trained_runs.EXPERIMENT."""
    from trained_runs import train_run

    return train_run(runs_store, "trainer.epochs=2", "model.width=16")


def run_cli(*args: str, cwd: Path, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """`python -m nnlab ARGS` in a subprocess, as a user types it."""
    # MLflow sets MLFLOW_TRACKING_URI in this process whenever an in-process job opens a store; a user's shell has
    # only what they set, so the subprocess gets the variable only where a test passes it.
    inherited = {k: v for k, v in os.environ.items() if k not in ("HYDRA_FULL_ERROR", "MLFLOW_TRACKING_URI")}
    full_env = {**inherited, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "nnlab", *args], cwd=cwd, env=full_env, capture_output=True,
                          text=True, timeout=timeout, check=False)


@pytest.fixture
def cli():
    return run_cli


@pytest.fixture
def nnlab_main(tmp_path, monkeypatch, capsys):
    """`nnlab ARGS` in this process, in tmp_path: (exit status, stderr lines); restores what main() changes.
    Hydra's logging set-up is left out: in a process where absl (TensorFlow) is loaded, re-configuring the root
    logger closes absl's stream, which under pytest is the capture file."""
    import signal

    from nnlab.cli import main

    monkeypatch.chdir(tmp_path)
    for var in ("HYDRA_FULL_ERROR", "TF_CPP_MIN_LOG_LEVEL", "MLFLOW_LOGGING_LEVEL"):
        monkeypatch.delenv(var, raising=False)
    sigterm = signal.getsignal(signal.SIGTERM)

    def call(*args: str) -> tuple[int, list[str]]:
        monkeypatch.setattr(sys, "argv", ["nnlab", *args, "hydra/job_logging=none", "hydra/hydra_logging=none"])
        with pytest.raises(SystemExit) as stop:
            main()
        return stop.value.code, [line for line in capsys.readouterr().err.splitlines() if line.strip()]

    yield call
    signal.signal(signal.SIGTERM, sigterm)


@pytest.fixture
def nnlab_cli(monkeypatch, capsys):
    """`nnlab ARGS` in this process: (exit status, stdout, stderr); restores the variables and signal handlers
    that main() sets (HYDRA_FULL_ERROR left set would make later jobs raise instead of exiting 2)."""
    import signal

    from nnlab.cli import main

    for var in ("HYDRA_FULL_ERROR", "TF_CPP_MIN_LOG_LEVEL", "MLFLOW_LOGGING_LEVEL"):
        monkeypatch.setenv(var, "")  # recorded, so that what main() sets is undone afterwards
        monkeypatch.delenv(var)
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGHUP)}

    def call(*args: str) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["nnlab", *args])
        try:
            main()
            code = 0
        except SystemExit as stop:
            code = stop.code
        out = capsys.readouterr()
        return code, out.out, out.err

    yield call
    for sig, handler in handlers.items():
        signal.signal(sig, handler)


@dataclass
class TrackingServer:
    """A team tracking server (`nnlab server start`) with students alice and bob and teacher teach."""
    folder: Path
    url: str
    passwords: dict[str, str]

    def env(self, user: str) -> dict[str, str]:
        """What a client of `user` sets: the MLflow way of signing in."""
        return {"MLFLOW_TRACKING_URI": self.url, "MLFLOW_TRACKING_USERNAME": user,
                "MLFLOW_TRACKING_PASSWORD": self.passwords[user]}

    def sign_in(self, monkeypatch, user: str) -> None:
        for key, value in self.env(user).items():
            monkeypatch.setenv(key, value)


@pytest.fixture(scope="session")
def tracking_server():
    """One real server (PostgreSQL + MLflow with basic-auth) for the whole session, started the way a teacher
    does. Its folder's parent lets others pass through: PostgreSQL runs as `postgres` where the tests run as root."""
    import shutil
    import tempfile

    from nnlab.server import service, users

    parent = Path(tempfile.mkdtemp(prefix="nnlab-server-"))
    os.chmod(parent, 0o711)
    folder = parent / "server"
    try:
        state = service.start(folder, port=service.free_port(), workers=2)
        passwords = {"admin": (folder / "secrets" / service.ADMIN_PASSWORD).read_text().strip()}
        for name, teacher in (("alice", False), ("bob", False), ("teach", True)):
            passwords[name] = users.add_user(folder, name, teacher)
        yield TrackingServer(folder, state.url, passwords)
    finally:
        service.stop(folder) if folder.is_dir() else None
        shutil.rmtree(parent, ignore_errors=True)


@pytest.fixture(scope="session")
def slurm_cluster():
    """A one-node SLURM cluster, started the way `make slurm` starts it (cluster/slurm.sh) unless one already
    answers; stopped at the end if this session started it. No cluster is a failure, never a skip."""
    script = REPO / "cluster" / "slurm.sh"
    was_up = subprocess.run([script, "status"], capture_output=True, text=True, check=False).returncode == 0
    if not was_up:
        started = subprocess.run([script, "start"], capture_output=True, text=True, timeout=600, check=False)
        if started.returncode != 0:
            pytest.fail(f"the one-node SLURM cluster did not start: {(started.stderr or started.stdout).strip()}")
    yield
    if not was_up:
        subprocess.run([script, "stop"], capture_output=True, text=True, timeout=120, check=False)

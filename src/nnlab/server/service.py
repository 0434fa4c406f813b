"""Start, stop and describe a team tracking server: PostgreSQL, then an MLflow server on it with MLflow's basic
authentication (its users in PostgreSQL too) and proxied artifacts under the server's folder.

Choices a class needs: every new experiment is private to whoever created it (`default_permission =
NO_PERMISSIONS`; MLflow gives the creator MANAGE on it), teachers are MLflow admins and read everything, and a
successful password check is cached for a minute (MLflow checks a slow password hash on every request otherwise:
a job's logging calls then wait on it)."""

import errno
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from nnlab.errors import NnlabError
from nnlab.processes import pid_alive
from nnlab.server import postgres
from nnlab.server.folder import ADMIN, AUTH_DB, DB_USER, TRACKING_DB, ServerDir, State

START_TIMEOUT_S = 180  # the first start creates MLflow's tables in PostgreSQL: tens of seconds on 2 cores
STOP_TIMEOUT_S = 30
AUTH_CACHE_S = 60
ADMIN_PASSWORD, DB_PASSWORD, PASSFILE, AUTH_INI = "admin_password", "db_password", "pgpass", "auth.ini"
FLASK_KEY = "flask_secret_key"  # signs the UI's CSRF tokens; kept so that a restart does not void them


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def check_port(host: str, port: int) -> None:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as err:
            why = "another program listens there" if err.errno == errno.EADDRINUSE else err.strerror
            raise NnlabError(f"Port {port} on {host} cannot be used ({why}); choose another with --port.") from None


def database_uri(pg_port: int, database: str) -> str:
    # No password here: libpq reads it from PGPASSFILE, so it is on no command line and in no config file.
    return f"postgresql+psycopg://{DB_USER}@127.0.0.1:{pg_port}/{database}"


def write_config(folder: ServerDir, pg_port: int) -> None:
    """The libpq password file and MLflow's auth config, both readable by their owner only."""
    folder.write_secret(PASSFILE, f"127.0.0.1:{pg_port}:*:{DB_USER}:{folder.secret(DB_PASSWORD)}\n")
    folder.write_secret(AUTH_INI, "\n".join([
        "[mlflow]", "default_permission = NO_PERMISSIONS", f"database_uri = {database_uri(pg_port, AUTH_DB)}",
        f"admin_username = {ADMIN}", "authorization_function = mlflow.server.auth:authenticate_request_basic_auth",
        f"auth_cache_ttl_seconds = {AUTH_CACHE_S}", ""]))


def running_state(folder: ServerDir) -> State | None:
    state = folder.state()
    return state if state is not None and pid_alive(state.mlflow_pid) else None


def start(root: str | Path, host: str = "127.0.0.1", port: int = 5000, workers: int = 4) -> State:
    folder = ServerDir(root)
    if folder.root.exists():
        folder.check_owner()
    state = running_state(folder)
    if state is not None:
        raise NnlabError(f"The server in {folder.root} already runs at {state.url} (pid {state.mlflow_pid}); "
                         f"stop it first with `nnlab server stop {folder.root}`.")
    postgres.tool("initdb")  # a missing PostgreSQL, before anything is created
    check_port(host, port)
    folder.create()
    first = not folder.pgdata.is_dir()
    if first:
        postgres.initialise(folder, folder.secret(DB_PASSWORD, create=True))
    folder.secret(ADMIN_PASSWORD, create=True)
    pg_port = free_port()
    write_config(folder, pg_port)
    postgres.stop(folder)  # one left by a crashed start: restart it on the new port
    postgres.start(folder, pg_port)
    try:
        postgres.create_databases(folder, pg_port, folder.secrets / PASSFILE)
        process = start_mlflow(folder, host, port, pg_port, workers)
        url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
        wait_healthy(url, process, folder.logs / "mlflow.log")
    except BaseException:
        postgres.stop(folder)
        raise
    state = State(url=url, host=host, port=port, pg_port=pg_port, mlflow_pid=process.pid, workers=workers)
    folder.save_state(state)
    return state


def start_mlflow(folder: ServerDir, host: str, port: int, pg_port: int, workers: int) -> subprocess.Popen:
    """The MLflow server in a session of its own (so `stop` ends it and its workers together), logging to
    logs/mlflow.log. Its secrets reach it through the environment, which only its owner can read."""
    env = {**os.environ, "PGPASSFILE": str(folder.secrets / PASSFILE),
           "MLFLOW_AUTH_CONFIG_PATH": str(folder.secrets / AUTH_INI),
           "MLFLOW_AUTH_ADMIN_PASSWORD": folder.secret(ADMIN_PASSWORD),
           "MLFLOW_FLASK_SERVER_SECRET_KEY": folder.secret(FLASK_KEY, create=True),
           # MLflow's job runner (4 huey processes, about 1.1 GB) serves GenAI features a class does not use.
           "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": os.environ.get("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")}
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        env.pop(name, None)
    args = [sys.executable, "-m", "mlflow", "server", "--app-name", "basic-auth",
            "--backend-store-uri", database_uri(pg_port, TRACKING_DB),
            "--serve-artifacts", "--artifacts-destination", str(folder.artifacts),
            "--host", host, "--port", str(port), "--workers", str(workers)]
    with open(folder.logs / "mlflow.log", "ab") as log:
        return subprocess.Popen(args, cwd=folder.root, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)


def wait_healthy(url: str, process: subprocess.Popen, log: Path) -> None:
    import requests

    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise NnlabError(f"The MLflow server ended at start (exit {process.returncode}): {last_line(log)} "
                             f"(its log: {log}).")
        try:
            if requests.get(url + "/health", timeout=5).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    end_group(process.pid)
    raise NnlabError(f"The MLflow server did not answer at {url} within {START_TIMEOUT_S} s (its log: {log}).")


def last_line(log: Path) -> str:
    try:
        lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "no log"
    errors = [line for line in lines if re.match(r"[\w.]+(Error|Exception): ", line)]
    return (errors or lines or ["no output"])[-1].strip()


def end_group(pid: int) -> None:
    """SIGTERM to the server's session (the server and its workers), SIGKILL for what remains after a while."""
    for sig, wait in ((signal.SIGTERM, STOP_TIMEOUT_S), (signal.SIGKILL, 5)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not group_alive(pid):
                return
            time.sleep(0.2)


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie leader (our own child) still counts for killpg; reap it where it is ours.
    try:
        done, _ = os.waitpid(pgid, os.WNOHANG)
        if done == pgid:
            return group_alive(pgid)
    except ChildProcessError:
        pass
    return pid_alive(pgid) or any(pid_in_group(p, pgid) for p in Path("/proc").iterdir() if p.name.isdigit())


def pid_in_group(proc: Path, pgid: int) -> bool:
    try:
        fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[2]) == pgid and fields[0] not in ("Z", "X")
    except (OSError, IndexError, ValueError):
        return False


def stop(root: str | Path) -> str:
    """Stop both processes; what was stopped, in words."""
    folder = ServerDir(root)
    if not folder.root.is_dir():
        raise NnlabError(f"No server folder at {folder.root}; name the folder given to `nnlab server start`.")
    folder.check_owner()
    state = folder.state()
    stopped = []
    if state is not None and group_alive(state.mlflow_pid):
        end_group(state.mlflow_pid)
        stopped.append(f"the MLflow server at {state.url}")
    if postgres.running(folder):
        postgres.stop(folder)
        stopped.append("PostgreSQL")
    folder.forget_state()
    return f"Stopped {' and '.join(stopped)}." if stopped else f"Nothing was running from {folder.root}."


def status(root: str | Path) -> tuple[bool, str]:
    """(whether the server answers, what runs where in words)."""
    import requests

    folder = ServerDir(root)
    if not folder.root.is_dir():
        return False, f"No server folder at {folder.root}."
    state, pg = running_state(folder), postgres.running(folder)
    if state is None:
        return False, f"No MLflow server runs from {folder.root}; PostgreSQL {'runs' if pg else 'is stopped'}."
    try:
        answer = f"answers ({requests.get(state.url + '/health', timeout=5).status_code})"
    except requests.RequestException as err:
        answer = f"does not answer ({type(err).__name__})"
    return answer.startswith("answers") and pg, (
        f"MLflow server at {state.url} (pid {state.mlflow_pid}, {state.workers} workers) {answer}; PostgreSQL "
        f"{'runs on 127.0.0.1:' + str(state.pg_port) if pg else 'is stopped'}; artifacts in {folder.artifacts}; "
        f"admin password in {folder.secrets / ADMIN_PASSWORD}.")

"""PostgreSQL for the server, driven by its own tools (initdb, pg_ctl, psql) from Debian's package.

PostgreSQL refuses to run as root, so where nnlab is root its data folder belongs to the `postgres` user that
Debian's package creates, and its tools run as that user. It listens on 127.0.0.1 only (TCP, no Unix socket: the
MLflow server is its only client) and asks for the password of role `nnlab`, which clients read from a libpq
password file (PGPASSFILE)."""

import glob
import os
import pwd
import shutil
import subprocess
from pathlib import Path

from nnlab.errors import NnlabError
from nnlab.server.folder import AUTH_DB, DB_USER, TRACKING_DB, ServerDir

SERVICE_USER = "postgres"  # Debian's package creates it; PostgreSQL runs as it where nnlab is root
SETTINGS = """
# nnlab server: loopback TCP only, enough connections for MLflow's workers (a pool each) and psql
listen_addresses = '127.0.0.1'
unix_socket_directories = ''
max_connections = 200
"""
BIN_GLOB = "/usr/lib/postgresql/*/bin"  # where Debian puts PostgreSQL's programs (not on PATH)
INSTALL = "install Debian's package (apt install postgresql) or put PostgreSQL's bin folder on PATH"


def tool(name: str) -> str:
    """A PostgreSQL program: on PATH, else in Debian's /usr/lib/postgresql/<version>/bin (not on PATH there)."""
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"{BIN_GLOB}/{name}"), reverse=True)), None)
    if found is None:
        raise NnlabError(f"PostgreSQL is not installed here (no `{name}` on PATH or in /usr/lib/postgresql); "
                         f"{INSTALL}.")
    return found


def service_user() -> pwd.struct_passwd | None:
    """Who runs PostgreSQL: None for this process's own user, `postgres` where this process is root."""
    if os.getuid() != 0:
        return None
    try:
        return pwd.getpwnam(SERVICE_USER)
    except KeyError:
        raise NnlabError(f"nnlab runs as root, and PostgreSQL refuses to; there is no `{SERVICE_USER}` user to run it "
                         f"as: {INSTALL} (it creates that user), or start the server as an ordinary user.") from None


def run_as(user: pwd.struct_passwd | None, args: list[str], cwd: Path, env: dict | None = None,
           timeout: float = 120) -> subprocess.CompletedProcess:
    """Run a PostgreSQL tool as `user` (None: as ourselves); its output is returned, not printed."""
    extra = {} if user is None else {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
    return subprocess.run(args, cwd=cwd, env={**os.environ, **(env or {})}, capture_output=True, text=True,
                          timeout=timeout, check=False, **extra)


def failed(what: str, out: subprocess.CompletedProcess, log: Path | None = None) -> NnlabError:
    said = (out.stderr or out.stdout).strip().splitlines()
    where = f" (its log: {log})" if log else ""
    return NnlabError(f"PostgreSQL {what} failed: {said[-1] if said else f'exit {out.returncode}'}{where}.")


def initialise(folder: ServerDir, password: str) -> None:
    """A new database cluster in folder.pgdata, owned by PostgreSQL's user, with role `nnlab` and `password`."""
    user = service_user()
    folder.postgres.mkdir(mode=0o700, exist_ok=True)
    if user is not None:
        os.chown(folder.postgres, user.pw_uid, user.pw_gid)
        reach = run_as(user, ["test", "-w", str(folder.postgres)], cwd=Path("/"))
        if reach.returncode != 0:
            raise NnlabError(f"PostgreSQL runs as user `{SERVICE_USER}` (nnlab is root), who cannot reach "
                             f"{folder.postgres}: let others enter each folder above it (chmod o+x), or choose a "
                             "server folder such as /srv/nnlab-server.")
    pwfile = folder.postgres / "initdb.pw"
    pwfile.write_text(password + "\n")
    os.chmod(pwfile, 0o600)
    if user is not None:
        os.chown(pwfile, user.pw_uid, user.pw_gid)
    try:
        out = run_as(user, [tool("initdb"), "-D", str(folder.pgdata), "-U", DB_USER, "--auth=scram-sha-256",
                            f"--pwfile={pwfile}", "-E", "UTF8", "--locale=C"], cwd=folder.postgres)
    finally:
        pwfile.unlink(missing_ok=True)
    if out.returncode != 0:
        raise failed("initdb", out)
    with open(folder.pgdata / "postgresql.conf", "a") as conf:
        conf.write(SETTINGS)


def log_file(folder: ServerDir) -> Path:
    return folder.postgres / "server.log"


def start(folder: ServerDir, port: int) -> None:
    out = run_as(service_user(), [tool("pg_ctl"), "-D", str(folder.pgdata), "-l", str(log_file(folder)), "-w",
                                  "-t", "90", "-o", f"-p {int(port)}", "start"], cwd=folder.postgres)
    if out.returncode != 0:
        raise failed("start", out, log_file(folder))


def running(folder: ServerDir) -> bool:
    if not folder.pgdata.is_dir():
        return False
    return run_as(service_user(), [tool("pg_ctl"), "-D", str(folder.pgdata), "status"],
                  cwd=folder.postgres).returncode == 0


def stop(folder: ServerDir) -> None:
    if not running(folder):
        return
    out = run_as(service_user(), [tool("pg_ctl"), "-D", str(folder.pgdata), "-m", "fast", "-w", "-t", "60", "stop"],
                 cwd=folder.postgres)
    if out.returncode != 0:
        raise failed("stop", out, log_file(folder))


def create_databases(folder: ServerDir, port: int, passfile: Path) -> None:
    """MLflow's tracking and user databases, where they are missing (the first start)."""
    psql = [tool("psql"), "-h", "127.0.0.1", "-p", str(port), "-U", DB_USER, "-d", "postgres", "-tAc"]
    env = {"PGPASSFILE": str(passfile)}
    have = run_as(None, [*psql, "SELECT datname FROM pg_database"], cwd=folder.root, env=env)
    if have.returncode != 0:
        raise failed("listing databases", have, log_file(folder))
    for name in (TRACKING_DB, AUTH_DB):
        if name not in have.stdout.split():
            out = run_as(None, [*psql, f"CREATE DATABASE {name}"], cwd=folder.root, env=env)
            if out.returncode != 0:
                raise failed(f"creating database {name}", out, log_file(folder))
